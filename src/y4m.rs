//! YUV4MPEG2 streams (`ffmpeg -f yuv4mpegpipe`): a header line with the frame size, rate
//! and colour space, then frames, each a `FRAME` line followed by the planar pixels.
//!
//! Read: `C420jpeg`, `C420paldv`, `C420mpeg2`, `C420` (all 4:2:0 planar; the variants differ
//! in chroma siting only, which nearest-sample reading ignores) and `Cmono`; limited range
//! (what ffmpeg writes unless `XCOLORRANGE=FULL`). Anything else is refused by name.

use crate::error::{Error, Result};
use crate::pixfmt::PixFmt;
use std::io::BufRead;

/// The longest header or FRAME line read (ffmpeg's are under 100 bytes).
const MAX_LINE: usize = 4096;

/// What a stream's header says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Header {
    pub width: usize,
    pub height: usize,
    /// Frames per second as numerator, denominator (`F30000:1001`), when given.
    pub rate: Option<(u64, u64)>,
    pub pix_fmt: PixFmt,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Image {
        what: "y4m stream".into(),
        msg: msg.into(),
    }
}

/// One line without its `\n`; None at a clean end of input.
fn read_line(r: &mut impl BufRead, what: &str) -> Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = std::io::Read::take(&mut *r, MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| bad(format!("reading the {what}: {e}")))?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(bad(format!(
            "the {what} does not end within {MAX_LINE} bytes"
        )));
    }
    line.pop();
    Ok(Some(line))
}

impl Header {
    /// Parses a header line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Header> {
        let text = std::str::from_utf8(line).map_err(|_| bad("the header is not text"))?;
        let mut words = text.split(' ');
        if words.next() != Some("YUV4MPEG2") {
            return Err(bad("no YUV4MPEG2 signature at the start"));
        }
        let (mut width, mut height, mut rate) = (None, None, None);
        let (mut pix_fmt, mut full_range) = (PixFmt::Yuv420p, false);
        for w in words.filter(|w| !w.is_empty()) {
            let (tag, v) = w.split_at(1);
            match tag {
                "W" | "H" => {
                    let n: usize = v
                        .parse()
                        .ok()
                        .filter(|&n| n > 0 && n <= crate::limits::MAX_IMAGE_SIDE)
                        .ok_or_else(|| {
                            bad(format!(
                                "frame {} `{v}` is not a size in 1..={}",
                                if tag == "W" { "width" } else { "height" },
                                crate::limits::MAX_IMAGE_SIDE
                            ))
                        })?;
                    if tag == "W" {
                        width = Some(n);
                    } else {
                        height = Some(n);
                    }
                }
                "F" => {
                    let r = v
                        .split_once(':')
                        .and_then(|(n, d)| Some((n.parse::<u64>().ok()?, d.parse::<u64>().ok()?)))
                        .filter(|&(n, d)| n > 0 && d > 0)
                        .ok_or_else(|| bad(format!("frame rate `{v}` is not N:D")))?;
                    rate = Some(r);
                }
                "C" => {
                    pix_fmt = match v {
                        "420jpeg" | "420paldv" | "420mpeg2" | "420" => PixFmt::Yuv420p,
                        "mono" => PixFmt::Gray,
                        _ => {
                            return Err(bad(format!(
                                "colour space C{v} is not supported (C420*, Cmono)"
                            )))
                        }
                    }
                }
                "X" if v == "COLORRANGE=FULL" => full_range = true,
                // Interlacing, aspect ratio and other extensions do not change the pixels read.
                _ => {}
            }
        }
        if full_range && pix_fmt != PixFmt::Gray {
            return Err(bad(
                "full-range YUV (XCOLORRANGE=FULL) is not supported: limited range only",
            ));
        }
        let (Some(width), Some(height)) = (width, height) else {
            return Err(bad("the header has no W (width) or H (height)"));
        };
        crate::limits::checked_size(
            "y4m frame",
            &[width, height],
            crate::limits::MAX_IMAGE_PIXELS,
            "pixels",
        )?;
        Ok(Header {
            width,
            height,
            rate,
            pix_fmt,
        })
    }

    /// Reads and parses the header line of `r`.
    pub fn read(r: &mut impl BufRead) -> Result<Header> {
        let line = read_line(r, "header")?.ok_or_else(|| bad("the input is empty"))?;
        Header::parse(&line)
    }

    /// Bytes of one frame's pixels.
    pub fn frame_bytes(&self) -> Result<usize> {
        self.pix_fmt
            .frame_bytes(self.width, self.height)
            .ok_or_else(|| bad("the frame size overflows"))
    }

    /// The time of frame `index` in seconds, when the header gives a rate.
    pub fn time_of(&self, index: u64) -> Option<f64> {
        self.rate.map(|(n, d)| index as f64 * d as f64 / n as f64)
    }
}

/// Reads the next `FRAME` line: Ok(false) at a clean end of input; an error when the line is
/// not a FRAME line (the stream position is then lost).
pub fn read_frame_marker(r: &mut impl BufRead) -> Result<bool> {
    match read_line(r, "FRAME line")? {
        None => Ok(false),
        Some(l) if l == b"FRAME" || l.starts_with(b"FRAME ") => Ok(true),
        Some(l) => Err(bad(format!(
            "expected a FRAME line, found `{}`",
            String::from_utf8_lossy(&l[..l.len().min(40)])
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffmpeg_headers_parse() {
        let h = Header::parse(b"YUV4MPEG2 W640 H480 F30000:1001 Ip A1:1 C420jpeg XYSCSS=420JPEG")
            .unwrap();
        assert_eq!((h.width, h.height, h.pix_fmt), (640, 480, PixFmt::Yuv420p));
        assert_eq!(h.rate, Some((30000, 1001)));
        assert_eq!(h.frame_bytes().unwrap(), 640 * 480 * 3 / 2);
        assert!((h.time_of(30).unwrap() - 1.001).abs() < 1e-12);
        let m = Header::parse(b"YUV4MPEG2 W3 H5 Cmono").unwrap();
        assert_eq!(
            (m.pix_fmt, m.rate, m.frame_bytes().unwrap()),
            (PixFmt::Gray, None, 15)
        );
        // No C tag: 4:2:0.
        assert_eq!(
            Header::parse(b"YUV4MPEG2 W2 H2").unwrap().pix_fmt,
            PixFmt::Yuv420p
        );
    }

    #[test]
    fn bad_headers_say_what_is_wrong() {
        for (line, what) in [
            (&b"YUV4MPEG W2 H2"[..], "signature"),
            (b"YUV4MPEG2 H2", "no W"),
            (b"YUV4MPEG2 W0 H2", "width `0`"),
            (b"YUV4MPEG2 W99999999999 H2", "width"),
            (b"YUV4MPEG2 W2 H2 C444", "C444"),
            (b"YUV4MPEG2 W2 H2 F30:0", "frame rate"),
            (b"YUV4MPEG2 W2 H2 XCOLORRANGE=FULL", "full-range"),
            (b"YUV4MPEG2 W20000 H20000", "pixels"),
            (b"\xff\xfe", "not text"),
        ] {
            let e = Header::parse(line).unwrap_err().to_string();
            assert!(e.contains(what), "{}: {e}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn frame_markers() {
        let mut r: &[u8] = b"FRAME\nFRAME Ixyz\nFRAMX\n";
        assert!(read_frame_marker(&mut r).unwrap());
        assert!(read_frame_marker(&mut r).unwrap());
        assert!(read_frame_marker(&mut r).is_err());
        assert!(!read_frame_marker(&mut r).unwrap(), "end of input");
        let long = [b'F'; MAX_LINE + 10];
        assert!(read_frame_marker(&mut &long[..]).is_err(), "unbounded line");
        assert!(Header::read(&mut &b""[..]).is_err());
    }
}
