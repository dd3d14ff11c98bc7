//! Photos attached to inspections and fixes: images only, told by their first bytes (not by
//! what the client says they are), at most [`MAX_PHOTO`] bytes, named by their SHA-256.

use sha2::{Digest, Sha256};

/// Largest photo: a phone's JPEG at a usable size; anything bigger is refused, not shrunk.
pub const MAX_PHOTO: usize = 512 * 1024;

/// Why a photo is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhotoError {
    #[error("the photo is empty")]
    Empty,
    #[error("the photo has {0} bytes, over the {max} KiB a photo may have", max = MAX_PHOTO / 1024)]
    TooLarge(usize),
    #[error("the photo is not a JPEG, PNG or WebP image (its first bytes say otherwise)")]
    NotAnImage,
}

/// The image type of `bytes` from its magic bytes, or why it is refused.
pub fn check(bytes: &[u8]) -> Result<&'static str, PhotoError> {
    if bytes.is_empty() {
        return Err(PhotoError::Empty);
    }
    if bytes.len() > MAX_PHOTO {
        return Err(PhotoError::TooLarge(bytes.len()));
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Ok("image/jpeg")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Ok("image/png")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Ok("image/webp")
    } else {
        Err(PhotoError::NotAnImage)
    }
}

/// A photo's name: the hex SHA-256 of its bytes.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `s` can be a photo's name (64 lower-case hex digits).
pub fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_images_under_the_limit_pass() {
        assert_eq!(check(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]), Ok("image/jpeg"));
        assert_eq!(check(b"\x89PNG\r\n\x1a\n...."), Ok("image/png"));
        assert_eq!(check(b"RIFF\0\0\0\0WEBPVP8 "), Ok("image/webp"));
        assert_eq!(check(b"%PDF-1.7"), Err(PhotoError::NotAnImage));
        assert_eq!(check(b""), Err(PhotoError::Empty));
        let mut big = vec![0xFF, 0xD8, 0xFF];
        big.resize(MAX_PHOTO + 1, 0);
        assert_eq!(check(&big), Err(PhotoError::TooLarge(MAX_PHOTO + 1)));
        assert!(is_digest(&digest(b"x")));
        assert!(!is_digest("../etc/passwd"));
    }
}
