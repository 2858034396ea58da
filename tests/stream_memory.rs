//! Reading a corpus holds bounded memory whatever its line lengths, and the mapped token store
//! gives its pages back. A binary of its own, not a module of `tests/it`: it measures the
//! process's resident memory, which tests running beside it in one process would raise (and which
//! Linux counts per thread, lazily). The two tests share the process, so each measures a
//! difference over its own work.

use masklm::data::corpus::{MAX_PIECE_BYTES, PieceReader};
use std::sync::Mutex;

/// The tests measure one process's memory, so they take turns: the harness runs tests on
/// threads side by side, and the 200 MB-line test failed once ("grew 33 MB", its bound 32) while
/// the store test built and mapped its 32 MB beside it, on a loaded machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A 200 MB line without a newline streams in pieces of at most 64 KiB: memory stays bounded.
#[test]
fn a_200_mb_line_streams_in_bounded_pieces() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one-line.txt");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let chunk = "lorem ipsum dolor sit amet ".repeat(4096);
        let mut written = 0;
        while written < 200 << 20 {
            f.write_all(chunk.as_bytes()).unwrap();
            written += chunk.len();
        }
    }
    let before = peak_rss_kb();
    let (mut pieces, mut bytes, mut longest) = (0usize, 0usize, 0usize);
    for p in PieceReader::new(vec![path], "text") {
        let p = p.unwrap();
        pieces += 1;
        bytes += p.text.len();
        longest = longest.max(p.text.len());
    }
    assert!(longest <= MAX_PIECE_BYTES, "{longest}");
    assert!(
        pieces > 3000 && bytes > 190 << 20,
        "{pieces} pieces, {bytes} bytes"
    );
    let grown_mb = peak_rss_kb().saturating_sub(before) / 1024;
    assert!(grown_mb < 32, "peak memory grew {grown_mb} MB reading it");
}

/// Rows read at random from a mapped store map its pages into the process; releasing them takes
/// the resident set back down (the store reads them again from the page cache when needed).
#[test]
fn the_mapped_store_gives_its_pages_back() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    use masklm::config::Packing;
    use masklm::data::batches::RowSet;
    use masklm::data::prepare::ShardWriter;
    use masklm::data::store::{self, Manifest, TokenStore};
    use std::sync::Arc;

    // A 32 MB store of synthetic ids (no tokenizer needed): 16 M u16 ids in lines of 50.
    let dir = tempfile::tempdir().unwrap();
    let mut w = ShardWriter::new(dir.path(), 2, store::SHARD_TOKENS);
    let line: Vec<u32> = (0..50).map(|i| 5 + i * 7).collect();
    for k in 0..(16 << 20) / 50 {
        w.line(&line, k % 7 == 0).unwrap();
    }
    let want = Manifest {
        format: store::FORMAT_VERSION,
        tokenizer: "synthetic".into(),
        text_field: "text".into(),
        id_width: 2,
        sources: Vec::new(),
        shards: Vec::new(),
    };
    let m = Manifest {
        shards: w.finish().unwrap(),
        ..want.clone()
    };
    std::fs::write(
        dir.path().join(store::MANIFEST_FILE),
        serde_json::to_vec(&m).unwrap(),
    )
    .unwrap();
    let s = Arc::new(
        TokenStore::open_if_current(dir.path(), &want)
            .unwrap()
            .unwrap(),
    );
    let rows = RowSet::all(s.clone(), Packing::Packed, 128);
    let sp = masklm::tokenizer::SpecialIds {
        pad: 0,
        unk: 1,
        cls: 2,
        sep: 3,
        mask: 4,
    };
    let (mut ids, mut mask) = (vec![0u32; 128], vec![0u8; 128]);
    let before = rss_file_kb();
    // Fewer rows than a release interval: nothing is released on the way.
    let mut x = 12345u64;
    for _ in 0..store::RELEASE_EVERY_ROWS - 24 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = ((x >> 33) % rows.len() as u64) as usize;
        rows.fill(r, &sp, &mut ids, &mut mask).unwrap();
    }
    let grown = rss_file_kb().saturating_sub(before);
    assert!(grown > 2048, "random rows mapped only {grown} KiB");
    s.release_pages();
    let left = rss_file_kb().saturating_sub(before);
    assert!(
        left * 4 < grown,
        "{left} KiB of {grown} KiB still mapped after the release"
    );
}

/// File-backed resident memory (Linux `RssFile`), in KiB.
fn rss_file_kb() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssFile:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn peak_rss_kb() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
