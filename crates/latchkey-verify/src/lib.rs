//! `latchkey-verify`: how services trust tokens issued by Latchkey.
//!
//! The [`jose`] module is the one implementation of JWS signing and
//! verification shared by the Latchkey server and every API that uses this
//! crate. Its central rule: **the algorithm comes from the key** (found by
//! `kid`), never from the token header. `alg: none`, algorithm confusion
//! (an HS256 token "signed" with a public key), unknown or missing `kid`,
//! bad signatures and wrong `iss`/`aud`/`typ`/`exp`/`nbf` are each refused
//! with a distinct [`jose::VerifyError`].
#![forbid(unsafe_code)]

pub mod jose;
