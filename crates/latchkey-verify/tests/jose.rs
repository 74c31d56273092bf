//! The JOSE layer against RFC vectors, an independent implementation
//! (`jsonwebtoken`) and every hostile token we know of.

use latchkey_verify::jose::{
    self, b64, Algorithm, Jwk, KeySet, SigningKey, Validation, VerifyError, VerifyingKey,
};
use rand::RngCore as _;
use serde_json::json;

const ISS: &str = "https://id.example.test";
const NOW: i64 = 1_800_000_000;

fn random_key(alg: Algorithm) -> SigningKey {
    let bytes = match alg {
        Algorithm::ES256 => p256::SecretKey::random(&mut rand::rngs::OsRng)
            .to_bytes()
            .to_vec(),
        Algorithm::EdDSA | Algorithm::HS256 => {
            let mut b = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut b);
            b.to_vec()
        }
        Algorithm::RS256 => {
            use rsa::pkcs1::EncodeRsaPrivateKey as _;
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("rsa keygen");
            key.to_pkcs1_der().expect("der").as_bytes().to_vec()
        }
    };
    SigningKey::from_bytes(alg, &bytes).expect("key")
}

fn claims(now: i64) -> serde_json::Value {
    json!({ "iss": ISS, "sub": "user-1", "aud": "api", "iat": now, "nbf": now, "exp": now + 900, "jti": "j1", "scope": "read" })
}

fn validation() -> Validation {
    Validation {
        audiences: vec!["api".into()],
        typ: Some("at+jwt".into()),
        ..Validation::new(ISS)
    }
}

fn set_of(keys: &[&SigningKey]) -> KeySet {
    KeySet::new(keys.iter().map(|k| k.verifying_key()).collect())
}

fn forge(header: serde_json::Value, payload: serde_json::Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes()),
        b64(signature)
    )
}

#[test]
fn rfc8037_a4_ed25519_signature_matches_byte_for_byte() {
    let d = jose::b64_decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A").expect("d");
    let key = SigningKey::from_bytes(Algorithm::EdDSA, &d).expect("ed25519");
    assert_eq!(
        key.public_jwk().and_then(|j| j.x),
        Some("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into())
    );
    let jws = key.sign_raw("eyJhbGciOiJFZERTQSJ9", &b64(b"Example of Ed25519 signing"));
    assert_eq!(
        jws,
        "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
    );
}

#[test]
fn rfc8037_a3_and_rfc7638_thumbprints() {
    let okp = Jwk {
        kty: "OKP".into(),
        crv: Some("Ed25519".into()),
        x: Some("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into()),
        ..empty_jwk()
    };
    assert_eq!(
        okp.thumbprint().expect("thumbprint"),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
    let rsa = Jwk {
        kty: "RSA".into(),
        n: Some("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into()),
        e: Some("AQAB".into()),
        ..empty_jwk()
    };
    assert_eq!(
        rsa.thumbprint().expect("thumbprint"),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

fn empty_jwk() -> Jwk {
    Jwk {
        kty: String::new(),
        crv: None,
        x: None,
        y: None,
        n: None,
        e: None,
        kid: None,
        alg: None,
        use_: None,
    }
}

#[test]
fn rfc7515_a3_es256_vector_verifies() {
    let jwk = Jwk {
        kty: "EC".into(),
        crv: Some("P-256".into()),
        x: Some("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU".into()),
        y: Some("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0".into()),
        ..empty_jwk()
    };
    let keys = KeySet::new(vec![VerifyingKey::from_jwk(&jwk).expect("jwk")]);
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    let verified =
        jose::verify::<serde_json::Value>(token, &keys, &Validation::new("joe"), 1_300_819_000)
            .expect("RFC vector verifies");
    assert_eq!(verified.claims["http://example.com/is_root"], true);
    // The RFC's private key reproduces the public key, and our signature over the same input verifies.
    let d = jose::b64_decode("jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI").expect("d");
    let key = SigningKey::from_bytes(Algorithm::ES256, &d).expect("p256");
    assert_eq!(key.public_jwk().and_then(|j| j.x), jwk.x);
    let ours = key.sign_raw(
        "eyJhbGciOiJFUzI1NiJ9",
        token.split('.').nth(1).expect("payload"),
    );
    jose::verify::<serde_json::Value>(&ours, &keys, &Validation::new("joe"), 1_300_819_000)
        .expect("ours verifies");
}

#[test]
fn every_algorithm_round_trips_and_verifies_with_jsonwebtoken() {
    for alg in [
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::RS256,
        Algorithm::HS256,
    ] {
        let key = random_key(alg);
        let token = key.sign("at+jwt", &claims(NOW)).expect("sign");
        let verified =
            jose::verify::<serde_json::Value>(&token, &set_of(&[&key]), &validation(), NOW)
                .expect("own verification");
        assert_eq!(verified.alg, alg);
        assert_eq!(verified.kid, key.kid());

        // Independent implementation: jsonwebtoken, keyed from our public JWK.
        let decoding = match key.public_jwk() {
            Some(jwk) => {
                let text = serde_json::to_string(&jwk).expect("jwk json");
                let theirs: jsonwebtoken::jwk::Jwk =
                    serde_json::from_str(&text).expect("their jwk");
                assert_eq!(
                    theirs
                        .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
                        .expect("their thumbprint"),
                    key.kid(),
                    "{alg}: kid is the RFC 7638 thumbprint"
                );
                jsonwebtoken::DecodingKey::from_jwk(&theirs).expect("decoding key")
            }
            None => jsonwebtoken::DecodingKey::from_secret(&key.to_bytes()),
        };
        let their_alg = match alg {
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
        };
        let mut v = jsonwebtoken::Validation::new(their_alg);
        v.set_issuer(&[ISS]);
        v.set_audience(&["api"]);
        v.validate_exp = false; // their clock is the real one; ours is NOW
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &v)
            .unwrap_or_else(|e| panic!("{alg}: jsonwebtoken refused our token: {e}"));
        assert_eq!(data.claims["sub"], "user-1");
        assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(data.header.kid.as_deref(), Some(key.kid()));
    }
}

#[test]
fn alg_none_never_verifies() {
    let key = random_key(Algorithm::ES256);
    for alg in ["none", "None", "NONE"] {
        let token = format!(
            "{}.",
            forge(
                json!({"alg": alg, "kid": key.kid(), "typ": "at+jwt"}),
                claims(NOW),
                b""
            )
            .trim_end_matches('.')
        );
        let token = if token.matches('.').count() == 1 {
            format!("{token}.")
        } else {
            token
        };
        assert_eq!(
            jose::verify::<serde_json::Value>(&token, &set_of(&[&key]), &validation(), NOW).err(),
            Some(VerifyError::AlgNone),
            "{alg}"
        );
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_algorithm_confusion() {
    for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA] {
        let key = random_key(alg);
        let public_text = serde_json::to_string(&key.public_jwk()).expect("jwk");
        // The attacker HMACs with what they know: the public key (as JWK text).
        let forger =
            SigningKey::from_bytes(Algorithm::HS256, public_text.as_bytes()).expect("hmac key");
        let header = b64(json!({"alg": "HS256", "kid": key.kid(), "typ": "at+jwt"})
            .to_string()
            .as_bytes());
        let token = forger.sign_raw(&header, &b64(claims(NOW).to_string().as_bytes()));
        assert_eq!(
            jose::verify::<serde_json::Value>(&token, &set_of(&[&key]), &validation(), NOW).err(),
            Some(VerifyError::AlgorithmMismatch),
            "{alg}"
        );
    }
}

#[test]
fn header_alg_must_match_the_keys_algorithm() {
    let key = random_key(Algorithm::ES256);
    let token = key.sign("at+jwt", &claims(NOW)).expect("sign");
    let (_, rest) = token.split_once('.').expect("dot");
    let relabeled = format!(
        "{}.{rest}",
        b64(json!({"alg": "RS256", "kid": key.kid(), "typ": "at+jwt"})
            .to_string()
            .as_bytes())
    );
    assert_eq!(
        jose::verify::<serde_json::Value>(&relabeled, &set_of(&[&key]), &validation(), NOW).err(),
        Some(VerifyError::AlgorithmMismatch)
    );
}

#[test]
fn kid_rules() {
    let a = random_key(Algorithm::ES256);
    let b = random_key(Algorithm::EdDSA);
    let token = a.sign("at+jwt", &claims(NOW)).expect("sign");
    // Unknown kid.
    assert_eq!(
        jose::verify::<serde_json::Value>(&token, &set_of(&[&b]), &validation(), NOW).err(),
        Some(VerifyError::UnknownKid)
    );
    // Missing kid with several keys.
    let header = b64(json!({"alg": "ES256", "typ": "at+jwt"})
        .to_string()
        .as_bytes());
    let no_kid = a.sign_raw(&header, &b64(claims(NOW).to_string().as_bytes()));
    assert_eq!(
        jose::verify::<serde_json::Value>(&no_kid, &set_of(&[&a, &b]), &validation(), NOW).err(),
        Some(VerifyError::MissingKid)
    );
    // Missing kid with exactly one key is unambiguous.
    jose::verify::<serde_json::Value>(&no_kid, &set_of(&[&a]), &validation(), NOW)
        .expect("single key");
}

#[test]
fn embedded_keys_in_the_header_are_ignored() {
    let real = random_key(Algorithm::ES256);
    let attacker = random_key(Algorithm::ES256);
    let header = json!({"alg": "ES256", "kid": attacker.kid(), "typ": "at+jwt", "jwk": attacker.public_jwk(), "jku": "https://evil.example/jwks", "x5u": "https://evil.example/x"});
    let token = attacker.sign_raw(
        &b64(header.to_string().as_bytes()),
        &b64(claims(NOW).to_string().as_bytes()),
    );
    assert_eq!(
        jose::verify::<serde_json::Value>(&token, &set_of(&[&real]), &validation(), NOW).err(),
        Some(VerifyError::UnknownKid)
    );
    // Even claiming the real kid, the attacker's signature fails.
    let header =
        json!({"alg": "ES256", "kid": real.kid(), "typ": "at+jwt", "jwk": attacker.public_jwk()});
    let token = attacker.sign_raw(
        &b64(header.to_string().as_bytes()),
        &b64(claims(NOW).to_string().as_bytes()),
    );
    assert_eq!(
        jose::verify::<serde_json::Value>(&token, &set_of(&[&real]), &validation(), NOW).err(),
        Some(VerifyError::BadSignature)
    );
}

#[test]
fn bad_signature_and_tampered_payload_fail() {
    let key = random_key(Algorithm::EdDSA);
    let token = key.sign("at+jwt", &claims(NOW)).expect("sign");
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let tampered_payload = b64(
        json!({"iss": ISS, "sub": "admin", "aud": "api", "exp": NOW + 900})
            .to_string()
            .as_bytes(),
    );
    let tampered = format!("{}.{}.{}", parts[0], tampered_payload, parts[2]);
    assert_eq!(
        jose::verify::<serde_json::Value>(&tampered, &set_of(&[&key]), &validation(), NOW).err(),
        Some(VerifyError::BadSignature)
    );
    let mut sig = jose::b64_decode(&parts[2]).expect("sig");
    sig[10] ^= 1;
    parts[2] = b64(&sig);
    assert_eq!(
        jose::verify::<serde_json::Value>(&parts.join("."), &set_of(&[&key]), &validation(), NOW)
            .err(),
        Some(VerifyError::BadSignature)
    );
}

#[test]
fn claim_checks() {
    let key = random_key(Algorithm::ES256);
    let keys = set_of(&[&key]);
    let check = |claims: serde_json::Value, typ: &str, now: i64| {
        jose::verify::<serde_json::Value>(
            &key.sign(typ, &claims).expect("sign"),
            &keys,
            &validation(),
            now,
        )
        .err()
    };
    let mut c = claims(NOW);
    c["iss"] = json!("https://evil.example");
    assert_eq!(check(c, "at+jwt", NOW), Some(VerifyError::WrongIssuer));
    let mut c = claims(NOW);
    c["aud"] = json!(["other", "another"]);
    assert_eq!(check(c, "at+jwt", NOW), Some(VerifyError::WrongAudience));
    let mut c = claims(NOW);
    c["aud"] = json!(["other", "api"]);
    assert_eq!(
        check(c, "at+jwt", NOW),
        None,
        "aud as an array containing ours"
    );
    assert_eq!(
        check(claims(NOW), "JWT", NOW),
        Some(VerifyError::WrongType),
        "an ID token is not an access token"
    );
    assert_eq!(check(claims(NOW), "application/at+jwt", NOW), None);
    // exp with 30 s leeway.
    assert_eq!(check(claims(NOW), "at+jwt", NOW + 900 + 29), None);
    assert_eq!(
        check(claims(NOW), "at+jwt", NOW + 900 + 30),
        Some(VerifyError::Expired)
    );
    // nbf in the future beyond leeway.
    assert_eq!(
        check(claims(NOW + 31), "at+jwt", NOW),
        Some(VerifyError::NotYetValid)
    );
    assert_eq!(check(claims(NOW + 29), "at+jwt", NOW), None);
    let mut c = claims(NOW);
    c.as_object_mut().expect("object").remove("exp");
    assert_eq!(check(c, "at+jwt", NOW), Some(VerifyError::MissingClaim));
}

#[test]
fn malformed_tokens_are_refused() {
    let key = random_key(Algorithm::ES256);
    let keys = set_of(&[&key]);
    let good = key.sign("at+jwt", &claims(NOW)).expect("sign");
    let too_big = format!("{}.{}.{}", "a".repeat(9000), "b".repeat(9000), "c");
    for token in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        too_big.as_str(),
        &format!("{good}.extra"),
        &good.replace('.', ".."),
    ] {
        assert_eq!(
            jose::verify::<serde_json::Value>(token, &keys, &validation(), NOW).err(),
            Some(VerifyError::Malformed),
            "{token:.40}"
        );
    }
    let crit = key.sign_raw(
        &b64(
            json!({"alg": "ES256", "kid": key.kid(), "typ": "at+jwt", "crit": ["exp"]})
                .to_string()
                .as_bytes(),
        ),
        &b64(claims(NOW).to_string().as_bytes()),
    );
    assert_eq!(
        jose::verify::<serde_json::Value>(&crit, &keys, &validation(), NOW).err(),
        Some(VerifyError::UnsupportedCritical)
    );
}

#[test]
fn weak_or_mismatched_jwks_are_refused() {
    let key = random_key(Algorithm::ES256);
    let mut jwk = key.public_jwk().expect("jwk");
    jwk.alg = Some("HS256".into());
    assert!(
        VerifyingKey::from_jwk(&jwk).is_err(),
        "an EC key cannot be declared HS256"
    );
    let oct = Jwk {
        kty: "oct".into(),
        ..empty_jwk()
    };
    assert!(
        VerifyingKey::from_jwk(&oct).is_err(),
        "symmetric keys never come from a JWKS"
    );
    assert!(
        VerifyingKey::hs256("k", &[0u8; 16]).is_err(),
        "HS256 needs 256 bits"
    );
    let mut off_curve = key.public_jwk().expect("jwk");
    off_curve.y = off_curve.x.clone();
    assert!(VerifyingKey::from_jwk(&off_curve).is_err());
}

#[test]
fn generated_keys_round_trip_through_their_sealed_bytes_and_rustcrypto_reads_them() {
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::traits::PublicKeyParts as _;
    for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
        let key = SigningKey::generate(alg, jose::RsaBits::B2048).expect("generate");
        // What the server seals is what it loads again: same kid, same public key.
        let again = SigningKey::from_bytes(alg, &key.to_bytes()).expect("reload");
        assert_eq!(again.kid(), key.kid(), "{alg}");
        assert_eq!(again.public_jwk(), key.public_jwk(), "{alg}");
        // An independent implementation derives the same public key from the bytes.
        let jwk = key.public_jwk().expect("jwk");
        let bytes = key.to_bytes();
        match alg {
            Algorithm::ES256 => {
                let theirs = p256::SecretKey::from_slice(&bytes).expect("p256 reads the scalar");
                let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &theirs.public_key(),
                    false,
                );
                assert_eq!(jwk.x.as_deref(), point.x().map(|x| b64(x)).as_deref());
                assert_eq!(jwk.y.as_deref(), point.y().map(|y| b64(y)).as_deref());
            }
            Algorithm::EdDSA => {
                let seed: [u8; 32] = bytes.as_slice().try_into().expect("a 32-byte seed");
                let theirs = ed25519_dalek::SigningKey::from_bytes(&seed);
                assert_eq!(jwk.x, Some(b64(theirs.verifying_key().as_bytes())));
            }
            _ => {
                let theirs = rsa::RsaPrivateKey::from_pkcs8_der(&bytes).expect("rsa reads PKCS#8");
                assert_eq!(theirs.n().bits(), 2048);
                assert_eq!(jwk.n, Some(b64(&theirs.n().to_bytes_be())));
                assert_eq!(jwk.e, Some(b64(&theirs.e().to_bytes_be())));
            }
        }
    }
    assert!(
        SigningKey::generate(Algorithm::HS256, jose::RsaBits::B2048).is_err(),
        "HS256 secrets come from configuration"
    );
}

#[test]
fn malformed_private_key_bytes_are_refused() {
    assert!(
        SigningKey::from_bytes(Algorithm::ES256, &[0u8; 32]).is_err(),
        "zero scalar"
    );
    assert!(
        SigningKey::from_bytes(Algorithm::ES256, &[0xffu8; 32]).is_err(),
        "scalar ≥ n"
    );
    assert!(
        SigningKey::from_bytes(Algorithm::ES256, &[1u8; 31]).is_err(),
        "short"
    );
    assert!(
        SigningKey::from_bytes(Algorithm::EdDSA, &[1u8; 33]).is_err(),
        "long seed"
    );
    assert!(SigningKey::from_bytes(Algorithm::RS256, b"not DER").is_err());
    assert!(SigningKey::from_bytes(Algorithm::RS256, &[]).is_err());
}
