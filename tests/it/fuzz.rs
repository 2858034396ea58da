//! Property tests ("fuzzing") of the three parsers of untrusted input: the corpus reader, the
//! config parser (file and `--set`), and the masking function. Each case must return a value or
//! a clean error, never panic, and keep its invariants.
//!
//! CI runs proptest's default 256 cases per property. A longer bounded run:
//!
//! ```sh
//! PROPTEST_CASES=20000 cargo test --release --test it fuzz::
//! ```
//!
//! A failing case is shrunk and printed by proptest; turn it into a regression test below.

use masklm::config::{Config, Source};
use masklm::data::corpus::{MAX_PIECE_BYTES, PieceReader};
use masklm::data::masking::{IGNORE_LABEL, MaskingParams, Rng, TokenTable, mask_row};
use proptest::prelude::*;
use rand::SeedableRng;

/// Bytes that look like text often enough to reach the interesting paths: ASCII words, blank
/// lines, CR LF, lone CR (an old Mac line end), multi-byte characters (whole and cut), and
/// arbitrary bytes.
fn text_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => "[a-z ]{0,12}".prop_map(|s| s.into_bytes()),
        2 => Just(b"\n".to_vec()),
        1 => Just(b"\r\n".to_vec()),
        1 => Just(b"\r".to_vec()),
        1 => Just(b"\n\n".to_vec()),
        1 => Just("é東京😀".as_bytes().to_vec()),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ];
    prop::collection::vec(piece, 0..64).prop_map(|v| v.concat())
}

fn read_all(bytes: &[u8]) -> Result<Vec<String>, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.txt");
    std::fs::write(&path, bytes).unwrap();
    PieceReader::new(vec![path], "text")
        .map(|p| p.map(|p| p.text).map_err(|e| format!("{e:#}")))
        .collect()
}

proptest! {
    #[test]
    fn the_corpus_reader_reads_valid_text_and_refuses_the_rest_by_offset(bytes in text_bytes()) {
        match (std::str::from_utf8(&bytes), read_all(&bytes)) {
            (Ok(text), Ok(pieces)) => {
                for p in &pieces {
                    prop_assert!(!p.is_empty() && p.len() <= MAX_PIECE_BYTES);
                    prop_assert!(!p.contains(['\n', '\r']));
                    prop_assert!(text.contains(p.as_str()), "{p:?} is not from the text");
                }
                // Every non-blank line comes out (short lines are never cut). Lines end at "\n",
                // "\r\n" or a lone "\r", as Python's universal newlines end them.
                let lines: Vec<&str> = text
                    .split(['\n', '\r'])
                    .filter(|l| !l.trim().is_empty())
                    .collect();
                let joined: Vec<&str> = pieces
                    .iter()
                    .map(|p| p.as_str())
                    .filter(|p| !p.trim().is_empty())
                    .collect();
                prop_assert_eq!(lines.len(), joined.len());
            }
            (Ok(_), Err(e)) => prop_assert!(false, "valid UTF-8 refused: {}", e),
            (Err(_), Ok(_)) => prop_assert!(false, "invalid UTF-8 accepted"),
            (Err(_), Err(e)) => {
                prop_assert!(e.contains("corpus.txt") && e.contains("byte offset"), "{}", e);
                prop_assert!(!e.contains("panicked"));
            }
        }
    }

    #[test]
    fn any_config_text_parses_or_is_refused_cleanly(text in "(\\[(model|data|train|tokenizer)\\]\n|[a-z_]{1,24} = (-?[0-9]{1,6}(\\.[0-9]{1,3})?|\"[a-z./]{0,10}\"|true|\\[\\]|1e-?[0-9])\n|[^\n]{0,20}\n){0,12}") {
        // Ok or Err; a panic fails the property.
        if let Ok(c) = Config::from_toml_str(&text, &Source::Embedded, &[]) {
            prop_assert!(c.validate().is_ok());
        }
    }

    #[test]
    fn any_set_flag_parses_or_is_refused_cleanly(
        key in "(model|data|train|tokenizer|x)\\.(seq_len|steps|mask_prob|hidden_size|batch_size|train|backend|learning_rate|num_attention_heads|[a-z_]{1,8})",
        value in "(-?[0-9]{1,20}(\\.[0-9]{1,4})?|nan|inf|-inf|\"[a-z]{0,6}\"|\\[\"[a-z.]{0,8}\"\\]|true|[^=]{0,12})",
    ) {
        let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/default.toml")).unwrap();
        let set = format!("{key}={value}");
        match Config::from_toml_str(&base, &Source::Embedded, std::slice::from_ref(&set)) {
            Ok(c) => prop_assert!(c.validate().is_ok()),
            Err(e) => {
                let msg = format!("{e:#}");
                prop_assert!(!msg.is_empty() && !msg.contains("panicked"));
            }
        }
    }

    #[test]
    fn masking_keeps_its_invariants(
        row in prop::collection::vec(0u32..40, 0..200),
        mask_prob in 0.001f64..0.999,
        mask_token_prob in 0.0f64..=1.0,
        random_share in 0.0f64..=1.0,
        whole_word: bool,
        seed: u64,
    ) {
        // Ids 0..5 are special ([PAD] [UNK] [CLS] [SEP] [MASK]); 30.. are ## continuations.
        let special: Vec<bool> = (0..40).map(|i| i < 5).collect();
        let continuation: Vec<bool> = (0..40).map(|i| i >= 30).collect();
        let table = TokenTable::new(special, continuation, 4);
        let p = MaskingParams {
            mask_prob,
            mask_token_prob,
            random_token_prob: (1.0 - mask_token_prob) * random_share,
            whole_word,
        };
        let mut ids = row.clone();
        let mut labels = vec![0i32; ids.len()];
        let mut rng = Rng::seed_from_u64(seed);
        let selected = mask_row(&mut ids, &mut labels, &p, &table, &mut rng);
        prop_assert_eq!(selected, labels.iter().filter(|&&l| l != IGNORE_LABEL).count());
        for i in 0..row.len() {
            if row[i] < 5 {
                prop_assert_eq!(labels[i], IGNORE_LABEL, "a special token was selected");
                prop_assert_eq!(ids[i], row[i]);
            } else if labels[i] == IGNORE_LABEL {
                prop_assert_eq!(ids[i], row[i], "an unselected token changed");
            } else {
                prop_assert_eq!(labels[i], row[i] as i32);
                prop_assert!(ids[i] == 4 || ids[i] >= 5, "replaced by a special token");
            }
        }
    }
}
