//! The limits on what an input may ask for, and the two helpers that enforce them: a checked
//! size computation ([`checked_size`]) and a bounded file reader ([`read_file`]).
//!
//! Every size that comes from an input (a command-line flag, a file header, a config value, a
//! pickle) goes through [`checked_size`] before anything is allocated, so that an overflow or
//! an absurd request is an error naming the limit instead of an abort, a hang or a machine
//! out of memory. Every file is read through [`read_file`], which refuses what is not a
//! regular file (a FIFO without a writer would block forever; `/dev/zero` never ends) and
//! what is larger than the limit for its kind. The limits are documented in README.md.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// Largest image side in pixels (decoded images, raw frames, `bench --size`).
pub const MAX_IMAGE_SIDE: usize = crate::preprocess::MAX_SIDE as usize;
/// Largest image in pixels (200 Mpx; 600 MB as RGB24).
pub const MAX_IMAGE_PIXELS: usize = crate::preprocess::MAX_PIXELS as usize;
/// Largest encoded image file or stream frame.
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;
/// Largest weights file (.safetensors or .pth); GLIP-L is about 1.7 GB.
pub const MAX_WEIGHTS_FILE_BYTES: u64 = 16 << 30;
/// Largest text file: yaml config, BERT config.json, tokenizer.json.
pub const MAX_TEXT_FILE_BYTES: u64 = 64 << 20;
/// Largest annotation or results JSON (COCO's instances_val2017.json is 25 MB, LVIS v1's
/// val set about 200 MB).
pub const MAX_ANNOTATION_FILE_BYTES: u64 = 2 << 30;
/// Deepest nesting accepted in a pickle or a yaml config (real files nest fewer than 12 deep).
pub const MAX_NESTING: usize = 100;
/// Largest `data.pkl` of a checkpoint (GLIP's are a few hundred KB).
pub const MAX_PICKLE_BYTES: u64 = 256 << 20;
/// Largest decompressed zip entry of a checkpoint (one storage).
pub const MAX_ZIP_ENTRY_BYTES: u64 = 8 << 30;
/// Largest expansion of a compressed zip entry (torch.save stores entries uncompressed, so
/// anything near this ratio is a zip bomb, not a checkpoint).
pub const MAX_COMPRESSION_RATIO: u64 = 100;
/// Largest single tensor materialised from a checkpoint view.
pub const MAX_TENSOR_BYTES: u64 = 8 << 30;
/// Largest `INPUT.MIN_SIZE_TEST` / `MAX_SIZE_TEST` (GLIP uses 800 / 1333).
pub const MAX_TEST_SIZE: usize = 8192;
/// Characters of a caption whose noun phrases are found (`--phrases auto`): GLIP reads at
/// most 256 tokens of a caption (about a thousand characters).
pub const MAX_AUTO_CAPTION_CHARS: usize = 4096;
/// Entities `--phrases auto` may make of a caption: each occurrence of each phrase is one
/// (GLIP's `run_ner`), so a phrase repeated k times makes k² of them; 256 tokens cannot
/// ground more.
pub const MAX_AUTO_ENTITIES: usize = crate::tokenizer::MAX_QUERY_LEN;

fn limit_err(what: &str, msg: String) -> Error {
    Error::Limit {
        what: what.to_string(),
        msg,
    }
}

/// The product of `factors` (e.g. width, height, channels, element bytes), checked for
/// overflow and against `limit`. `what` names the input in the error, e.g. "--width x
/// --height", and `unit` what is counted ("bytes", "pixels").
pub fn checked_size(what: &str, factors: &[usize], limit: usize, unit: &str) -> Result<usize> {
    let shown = || {
        factors
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(" x ")
    };
    let n = factors
        .iter()
        .try_fold(1usize, |a, &f| a.checked_mul(f))
        .ok_or_else(|| {
            limit_err(
                what,
                format!("{} overflows (the limit is {limit} {unit})", shown()),
            )
        })?;
    if n > limit {
        return Err(limit_err(
            what,
            format!(
                "{} = {n} {unit} exceeds the limit of {limit} {unit}",
                shown()
            ),
        ));
    }
    Ok(n)
}

/// What kind of file system object `meta` is, for messages.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

/// Checks that `path` is a regular file of at most `limit` bytes, without opening it (opening
/// a FIFO blocks until a writer comes). Returns its length.
pub fn check_regular_file(path: &Path, limit: u64, what: &str) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(limit_err(
            &format!("{what} {}", path.display()),
            format!("{}, not a regular file; refused", kind(&meta)),
        ));
    }
    if meta.len() > limit {
        return Err(limit_err(
            &format!("{what} {}", path.display()),
            format!("{} bytes exceed the limit of {limit} bytes", meta.len()),
        ));
    }
    Ok(meta.len())
}

/// Reads a whole regular file of at most `limit` bytes (`what` says which kind of file, for
/// the error: "image", "weights file", …). A file that grows past the limit while it is read
/// is refused too.
pub fn read_file(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let len = check_regular_file(path, limit, what)?;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    f.take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| Error::io(path, e))?;
    if out.len() as u64 > limit {
        return Err(limit_err(
            &format!("{what} {}", path.display()),
            format!("grew past the limit of {limit} bytes while being read"),
        ));
    }
    Ok(out)
}

/// [`read_file`] for UTF-8 text.
pub fn read_text_file(path: &Path, what: &str) -> Result<String> {
    let bytes = read_file(path, MAX_TEXT_FILE_BYTES, what)?;
    String::from_utf8(bytes).map_err(|e| {
        limit_err(
            &format!("{what} {}", path.display()),
            format!("not UTF-8 text ({e})"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_for_overflow_and_limit() {
        assert_eq!(checked_size("x", &[2, 3, 4], 24, "bytes").ok(), Some(24));
        let e = checked_size("--width x --height", &[1 << 62, 4], usize::MAX, "bytes")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("overflows"), "{e}");
        let e = checked_size("frame", &[100_000, 100_000, 3], 1 << 30, "bytes")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("exceeds the limit"), "{e}");
    }

    #[test]
    fn devices_and_directories_are_refused_without_reading() {
        for p in ["/dev/zero", "/tmp"] {
            let e = read_file(Path::new(p), 1 << 20, "image")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("not a regular file"), "{p}: {e}");
        }
    }
}
