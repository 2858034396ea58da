//! Reading a corpus holds bounded memory whatever its line lengths. A binary of its own, not a
//! module of `tests/it`: it measures the process's peak resident memory, which tests running
//! beside it in one process would raise (and which Linux counts per thread, lazily).

use masklm::data::corpus::{MAX_PIECE_BYTES, PieceReader};

/// A 200 MB line without a newline streams in pieces of at most 64 KiB: memory stays bounded.
#[test]
fn a_200_mb_line_streams_in_bounded_pieces() {
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

fn peak_rss_kb() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
