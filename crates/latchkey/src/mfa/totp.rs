//! TOTP (RFC 6238) rules: 30-second steps, 6 digits, ±1 step, each step
//! usable once. Code generation is `totp-rs`; the window, the replay rule
//! and constant-time comparison are ours.

use totp_rs::{Algorithm, TOTP};

use crate::crypto::constant_time_eq;

pub const STEP_SECS: u64 = 30;
pub const DIGITS: usize = 6;

/// A TOTP generator for one secret.
pub struct Totp {
    inner: TOTP,
}

impl Totp {
    /// SHA-1, 6 digits, 30 s: what every authenticator app supports.
    pub fn new(secret: &[u8]) -> Totp {
        Totp {
            inner: TOTP::new_unchecked(Algorithm::SHA1, DIGITS, 1, STEP_SECS, secret.to_vec()),
        }
    }

    /// Any algorithm and length (RFC 6238 Appendix B vectors).
    pub fn with(algorithm: Algorithm, digits: usize, secret: &[u8]) -> Totp {
        Totp {
            inner: TOTP::new_unchecked(algorithm, digits, 1, STEP_SECS, secret.to_vec()),
        }
    }

    pub fn code_at(&self, unix_time: u64) -> String {
        self.inner.generate(unix_time)
    }

    /// The step (`time / 30`) whose code equals `code`, looking at the current
    /// step and one on each side; `None` if none matches.
    pub fn matching_step(&self, code: &str, unix_time: u64) -> Option<u64> {
        let code = code.trim();
        if code.len() != self.inner.digits || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let current = unix_time / STEP_SECS;
        let mut found = None;
        // Check every candidate (no early exit) so timing does not tell which matched.
        for step in [current.saturating_sub(1), current, current + 1] {
            if constant_time_eq(
                self.inner.generate(step * STEP_SECS).as_bytes(),
                code.as_bytes(),
            ) {
                found = Some(step);
            }
        }
        found
    }

    /// `otpauth://` URI for authenticator apps.
    pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
        let b32 = base32_encode(secret);
        let enc = |s: &str| {
            url::form_urlencoded::byte_serialize(s.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        };
        format!(
            "otpauth://totp/{}:{}?secret={b32}&issuer={}&algorithm=SHA1&digits=6&period=30",
            enc(issuer),
            enc(account),
            enc(issuer)
        )
    }
}

/// RFC 4648 base32 without padding (the manual-entry key format).
pub fn base32_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(len: usize) -> Vec<u8> {
        b"1234567890".iter().cycle().take(len).copied().collect()
    }

    /// RFC 6238 Appendix B: the seed is "1234567890" repeated to 20 / 32 / 64
    /// bytes for SHA1 / SHA256 / SHA512; 8 digits.
    #[test]
    fn rfc6238_appendix_b_vectors() {
        let vectors: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        let sha1 = Totp::with(Algorithm::SHA1, 8, &seed(20));
        let sha256 = Totp::with(Algorithm::SHA256, 8, &seed(32));
        let sha512 = Totp::with(Algorithm::SHA512, 8, &seed(64));
        for (t, a, b, c) in vectors {
            assert_eq!(sha1.code_at(t), a, "SHA1 at {t}");
            assert_eq!(sha256.code_at(t), b, "SHA256 at {t}");
            assert_eq!(sha512.code_at(t), c, "SHA512 at {t}");
        }
    }

    #[test]
    fn window_is_one_step_each_side() {
        let t = Totp::new(&seed(20));
        let now = 1_800_000_015; // inside step 60_000_000
        let step = now / STEP_SECS;
        assert_eq!(t.matching_step(&t.code_at(now), now), Some(step));
        assert_eq!(t.matching_step(&t.code_at(now - 30), now), Some(step - 1));
        assert_eq!(t.matching_step(&t.code_at(now + 30), now), Some(step + 1));
        assert_eq!(
            t.matching_step(&t.code_at(now - 60), now),
            None,
            "two steps old"
        );
        assert_eq!(
            t.matching_step(&t.code_at(now + 60), now),
            None,
            "two steps ahead"
        );
        assert_eq!(t.matching_step("12345", now), None);
        assert_eq!(t.matching_step("12345a", now), None);
    }

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_encode(b"f"), "MY");
    }
}
