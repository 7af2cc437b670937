//! Random tokens from the OS's random source: instance ids, passwords, temp-file suffixes.

/// The characters of ids and passwords: lowercase letters and digits.
pub const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `len` random characters of `ALPHABET`, every one equally likely.
pub fn random(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).expect("the OS random source is unavailable");
        // 252 = 7 × 36: rejecting bytes above it keeps every character equally likely.
        out.extend(
            buf.iter().filter(|&&b| b < 252).map(|&b| ALPHABET[usize::from(b) % 36] as char).take(len - out.len()),
        );
    }
    out
}

/// A new password: 32 characters of a 36-letter alphabet, about 165 bits.
pub fn password() -> String {
    random(32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_have_the_length_and_alphabet_asked_for() {
        for len in [0, 1, 6, 32, 100] {
            let t = super::random(len);
            assert_eq!(t.len(), len);
            assert!(t.bytes().all(|b| super::ALPHABET.contains(&b)), "{t}");
        }
        assert_ne!(super::password(), super::password());
    }
}
