//! A Server-Sent Events parser (the WHATWG HTML "event stream
//! interpretation"), fed with the chunks of an HTTP body as they arrive.
//!
//! Why hand-written: the feed needs only the parsing half of SSE (lines,
//! fields, dispatch on an empty line) over a byte stream we already read with
//! reqwest; the SSE client crates bring their own HTTP stack, reconnection
//! policy and `Last-Event-ID` handling — exactly the parts the subscriber
//! must control itself (a fresh bearer token on every reconnect, our own
//! backoff and dead-stream detection). The parser is pure and small enough to
//! test case by case: lines ending in LF, CRLF or CR (even split across
//! chunks), comments, multi-line `data`, fields without a value, a leading
//! BOM, and a bound on the size of one event (its line being read plus the
//! `data` gathered so far), so a hostile stream cannot grow memory without
//! bound, whether with one endless line or with endless short `data` lines.
//!
//! Must not: do I/O, or interpret event types (the subscriber does).

/// A dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field, `message` when absent.
    pub event: String,
    /// The `data` lines joined with `\n`.
    pub data: String,
    /// This event's own `id` field, if it had one.
    pub id: Option<String>,
}

/// The stream broke the parser's bounds: one event (or line) is longer than
/// the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an event stream event is longer than {0} bytes")]
pub struct LineTooLong(pub usize);

/// Incremental SSE parser.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended with CR: a leading LF of the next one belongs to it.
    after_cr: bool,
    started: bool,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    max_line: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::new(1024 * 1024)
    }
}

impl SseParser {
    /// A parser refusing events (the `data` gathered so far plus the line
    /// being read) longer than `max_line` bytes.
    pub fn new(max_line: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            after_cr: false,
            started: false,
            event: None,
            data: None,
            id: None,
            max_line,
        }
    }

    /// Feeds the next chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut out = Vec::new();
        let mut bytes = chunk;
        if !self.started && !bytes.is_empty() {
            // A UTF-8 BOM at the very start of the stream is dropped.
            self.started = true;
            if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
                bytes = rest;
            }
        }
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.end_line(&mut out);
                    self.after_cr = true;
                }
                _ => {
                    let gathered = self.data.as_ref().map_or(0, String::len);
                    if self.line.len() + gathered >= self.max_line {
                        return Err(LineTooLong(self.max_line));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseEvent {
                    event: self.event.take().unwrap_or_else(|| "message".to_owned()),
                    data,
                    id: self.id.take(),
                });
            } else {
                self.event = None;
                self.id = None;
            }
            return;
        }
        if line[0] == b':' {
            return; // a comment (keepalive)
        }
        let text = String::from_utf8_lossy(&line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields are ignored
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.map(Into::into),
        }
    }

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        chunks
            .iter()
            .flat_map(|c| parser.push(c).expect("within bounds"))
            .collect()
    }

    const FEED: &[u8] = b"retry: 1000\n\nid: 1\nevent: revocation\ndata: a.b.c\n\n: keepalive\n\nevent: synced\ndata: {\"head\":1}\n\n";

    #[test]
    fn parses_the_feed_framing() {
        assert_eq!(
            parse_all(&[FEED]),
            vec![
                event("revocation", "a.b.c", Some("1")),
                event("synced", "{\"head\":1}", None),
            ]
        );
    }

    #[test]
    fn any_chunk_boundary_gives_the_same_events() {
        let whole = parse_all(&[FEED]);
        for split in 0..FEED.len() {
            let (a, b) = FEED.split_at(split);
            assert_eq!(parse_all(&[a, b]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = FEED.chunks(1).collect();
        assert_eq!(parse_all(&bytes), whole, "one byte at a time");
    }

    #[test]
    fn crlf_and_cr_line_endings_even_split_across_chunks() {
        let crlf = b"id: 7\r\nevent: revocation\r\ndata: x\r\n\r\n";
        assert_eq!(
            parse_all(&[crlf]),
            vec![event("revocation", "x", Some("7"))]
        );
        let cr = b"id: 7\revent: revocation\rdata: x\r\r";
        assert_eq!(parse_all(&[cr]), vec![event("revocation", "x", Some("7"))]);
        // CR at the end of one chunk, LF at the start of the next: one line end.
        assert_eq!(
            parse_all(&[b"data: x\r", b"\ndata: y\r", b"\n\r", b"\n"]),
            vec![event("message", "x\ny", None)]
        );
    }

    #[test]
    fn comments_are_skipped_and_multi_line_data_is_joined() {
        let text = b": hello\ndata: first\n: in between\ndata:second\ndata\n\n";
        assert_eq!(
            parse_all(&[text]),
            vec![event("message", "first\nsecond\n", None)]
        );
    }

    #[test]
    fn a_block_without_data_dispatches_nothing_and_forgets_its_fields() {
        let text = b"event: synced\nid: 3\n\ndata: x\n\n";
        assert_eq!(parse_all(&[text]), vec![event("message", "x", None)]);
    }

    #[test]
    fn a_leading_bom_is_ignored() {
        assert_eq!(
            parse_all(&[b"\xEF\xBB\xBFdata: x\n\n"]),
            vec![event("message", "x", None)]
        );
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut parser = SseParser::new(16);
        assert!(parser.push(b"data: 0123456789").is_ok());
        assert_eq!(parser.push(b"abcdef"), Err(LineTooLong(16)));
    }

    #[test]
    fn endless_short_data_lines_are_refused_too() {
        let mut parser = SseParser::new(64);
        let mut refused = false;
        for _ in 0..100 {
            if parser.push(b"data: 0123456789\n").is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "one event's data is bounded, not only one line");
        // Within the bound, an event of several lines still passes.
        let mut parser = SseParser::new(64);
        assert_eq!(
            parser.push(b"data: 0123456789\ndata: 0123456789\n\n"),
            Ok(vec![event("message", "0123456789\n0123456789", None)])
        );
    }
}
