//! The base protocol: `Content-Length` framed JSON messages on a byte
//! stream.
//!
//! lsp-server's own reader trusts the `Content-Length` it is sent (a huge
//! one allocates that much) and ends the connection on a body that is not
//! JSON; this one bounds every header line and body, and hands the body
//! back as bytes so that a malformed message is answered, not fatal.

use std::io::{self, BufRead, Read, Write};

/// Largest message body read, in bytes: far above any policy file the
/// engine accepts (4 MiB) with its JSON escaping.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Longest header line read, in bytes.
const MAX_HEADER_LINE: u64 = 8 * 1024;

/// Why a frame could not be read. After any of these the stream cannot be
/// trusted to be at a message boundary, so the server stops.
#[derive(Debug)]
pub enum FrameError {
    /// Reading stdin failed, or it ended inside a message.
    Io(io::Error),
    /// A header line is not `Name: value\r\n`, or has no `Content-Length`.
    Header(String),
    /// The `Content-Length` is over [`MAX_BODY`].
    TooLarge(usize),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Io(error) => write!(f, "cannot read a message: {error}"),
            FrameError::Header(why) => write!(f, "malformed message header: {why}"),
            FrameError::TooLarge(size) => write!(
                f,
                "a message of {size} bytes is larger than the {MAX_BODY} bytes accepted"
            ),
        }
    }
}

/// Reads one message body; `Ok(None)` at the end of the stream between
/// messages.
pub fn read_frame(input: &mut impl BufRead) -> Result<Option<Vec<u8>>, FrameError> {
    let mut length: Option<usize> = None;
    let mut first = true;
    loop {
        let mut line = String::new();
        let read = input
            .by_ref()
            .take(MAX_HEADER_LINE)
            .read_line(&mut line)
            .map_err(FrameError::Io)?;
        if read == 0 {
            return if first {
                Ok(None)
            } else {
                Err(FrameError::Header(
                    "the stream ended inside the headers".to_owned(),
                ))
            };
        }
        first = false;
        let Some(line) = line.strip_suffix("\r\n") else {
            return Err(FrameError::Header(format!(
                "`{}` does not end with CRLF",
                line.escape_debug()
            )));
        };
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(FrameError::Header(format!(
                "`{}` has no `:`",
                line.escape_debug()
            )));
        };
        if name.trim().eq_ignore_ascii_case("content-length") {
            let value = value.trim();
            let size = value.parse::<usize>().map_err(|_| {
                FrameError::Header(format!(
                    "`Content-Length: {}` is not a size",
                    value.escape_debug()
                ))
            })?;
            length = Some(size);
        }
    }
    let size = length.ok_or_else(|| FrameError::Header("no `Content-Length`".to_owned()))?;
    if size > MAX_BODY {
        return Err(FrameError::TooLarge(size));
    }
    let mut body = vec![0u8; size];
    input.read_exact(&mut body).map_err(FrameError::Io)?;
    Ok(Some(body))
}

/// Writes one message and flushes it.
pub fn write_frame(output: &mut impl Write, body: &[u8]) -> io::Result<()> {
    write!(output, "Content-Length: {}\r\n\r\n", body.len())?;
    output.write_all(body)?;
    output.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_frames_and_refuses_bad_headers() {
        let mut input: &[u8] = b"Content-Length: 2\r\n\r\n{}Content-Length: 1\r\n\r\n[";
        assert_eq!(read_frame(&mut input).ok().flatten(), Some(b"{}".to_vec()));
        assert_eq!(read_frame(&mut input).ok().flatten(), Some(b"[".to_vec()));
        assert!(matches!(read_frame(&mut input), Ok(None)));

        let mut huge: &[u8] = b"Content-Length: 99999999999999\r\n\r\n";
        assert!(matches!(
            read_frame(&mut huge),
            Err(FrameError::TooLarge(_))
        ));
        let mut bare: &[u8] = b"Content-Type: x\r\n\r\n{}";
        assert!(matches!(read_frame(&mut bare), Err(FrameError::Header(_))));
        let mut short: &[u8] = b"Content-Length: 10\r\n\r\n{}";
        assert!(matches!(read_frame(&mut short), Err(FrameError::Io(_))));
    }
}
