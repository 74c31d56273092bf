//! Signing keys: generation, sealing at rest, rotation and the JWKS.
//!
//! Owns: the `signing_keys` table, the in-memory [`KeyRing`] every instance
//! signs and verifies with, and the rotation schedule.
//!
//! Lifecycle of a key (per algorithm, ordered by `generation`):
//! 1. **published**: inserted `key_prepublish_secs` (default 1 day) before it
//!    activates, so every JWKS cache has it before any token carries its `kid`;
//! 2. **active**: the newest published key whose `activates_at` has passed
//!    signs new tokens;
//! 3. **superseded / retired**: once a newer key activates (or an operator
//!    retires it) it stops signing but stays in the JWKS for the retention
//!    period — the longest lifetime of anything it signed plus leeway — and is
//!    then deleted.
//!
//! Several instances may share one database: the next generation is inserted
//! with `UNIQUE (alg, generation)`, so exactly one instance creates it and the
//! others load it. Every instance switches keys at the same `activates_at`.
//!
//! Private keys are sealed with XChaCha20-Poly1305 under a key derived from the
//! master key, with the `kid` and algorithm as associated data. A wrong master
//! key fails to unseal and stops start-up with a clear error.
//!
//! Must not: know about HTTP or token claims.

use std::sync::{Arc, RwLock};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use latchkey_verify::jose::{Algorithm, JwkSet, KeySet, RsaBits, SigningKey};
use sqlx::Row as _;

use crate::clock::UnixTime;
use crate::config::TokenConfig;
use crate::crypto::{b64url, b64url_decode, random_bytes, MasterKey};
use crate::store::{Pool, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the master key cannot unseal signing key {kid}: is this the master key this database was created with? (LATCHKEY_MASTER_KEY / LATCHKEY_MASTER_KEY_FILE)")]
    WrongMasterKey { kid: String },
    #[error("signing key {kid} is corrupt: {reason}")]
    Corrupt { kid: String, reason: String },
    #[error("no signing key {0}")]
    UnknownKid(String),
    #[error("no active {0} signing key")]
    NoActiveKey(Algorithm),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for KeyError {
    fn from(e: sqlx::Error) -> Self {
        KeyError::Store(e.into())
    }
}

/// One key as the ring holds it.
#[derive(Debug, Clone)]
pub struct RingKey {
    pub key: Arc<SigningKey>,
    pub generation: i64,
    pub created_at: UnixTime,
    pub activates_at: UnixTime,
    pub retired_at: Option<UnixTime>,
    /// When a newer key of the same algorithm took over (computed).
    pub superseded_at: Option<UnixTime>,
}

impl RingKey {
    /// When this key stopped (or will stop) signing.
    pub fn signing_ended_at(&self) -> Option<UnixTime> {
        match (self.retired_at, self.superseded_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Status of a key at a moment, for `latchkey keys list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Published, not signing yet.
    Next,
    Active,
    /// No longer signing; still published until `remove_at`.
    Retired,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: String,
    pub status: KeyStatus,
    pub generation: i64,
    pub created_at: UnixTime,
    pub activates_at: UnixTime,
    pub signing_ended_at: Option<UnixTime>,
    pub remove_at: Option<UnixTime>,
}

#[derive(Default)]
struct Snapshot {
    keys: Vec<RingKey>,
    verify: Arc<KeySet>,
}

/// How often every running instance reloads the keys from the database
/// ([`KeyRing::maintain`], in the maintenance loop): a key rotated or retired
/// by `latchkey keys …` in another process reaches it within this time.
pub const RELOAD_INTERVAL_SECS: u64 = 60;

/// The keys this instance signs and verifies with, reloaded from the
/// database by [`KeyRing::maintain`]. Cheap to read concurrently.
pub struct KeyRing {
    config: TokenConfig,
    /// `config.key_algorithms()`, computed once: read on every token issued.
    algorithms: Vec<Algorithm>,
    sealing_key: [u8; 32],
    snapshot: RwLock<Arc<Snapshot>>,
    /// Serializes reloads, so a slow reload that read the table earlier can
    /// never install its older view over a newer one (the maintenance loop
    /// and an operator's rotate/retire may reload at the same time).
    reload_lock: tokio::sync::Mutex<()>,
}

fn aad(kid: &str, alg: Algorithm) -> Vec<u8> {
    format!("latchkey-signing-key|{alg}|{kid}").into_bytes()
}

impl KeyRing {
    pub fn new(config: &TokenConfig, master: &MasterKey) -> KeyRing {
        KeyRing {
            config: config.clone(),
            algorithms: config.key_algorithms(),
            sealing_key: master.derive("latchkey/signing-key-seal/v1"),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            reload_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Algorithms this deployment keeps keys for (the default first; RS256,
    /// the ID tokens' default, always among them: see
    /// [`TokenConfig::key_algorithms`]).
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    pub fn default_algorithm(&self) -> Algorithm {
        Algorithm::parse(&self.config.signing_algorithm).unwrap_or(Algorithm::ES256)
    }

    /// The algorithm that signs access tokens for a client that asked for
    /// `requested` (its registration's override): that one when this
    /// deployment keeps keys of it, else the default.
    pub fn access_token_algorithm(&self, requested: Option<Algorithm>) -> Algorithm {
        requested
            .filter(|a| self.algorithms.contains(a))
            .unwrap_or_else(|| self.default_algorithm())
    }

    /// The algorithm that signs ID tokens (and back-channel logout tokens)
    /// for a client that asked for `requested` (its
    /// `id_token_signed_response_alg`): that one when it is asymmetric and
    /// kept here, else RS256 (OIDC Core §15.1; the ring always keeps an RS256
    /// key). Never HS256: a relying party cannot verify our shared secret.
    pub fn id_token_algorithm(&self, requested: Option<Algorithm>) -> Algorithm {
        requested
            .filter(|a| a.is_asymmetric() && self.algorithms.contains(a))
            .unwrap_or(crate::config::DEFAULT_ID_TOKEN_ALGORITHM)
    }

    /// The longest lifetime of a token signed by these keys (per-client
    /// overrides included): the retention below covers no more than this.
    pub fn max_token_lifetime_secs(&self) -> i64 {
        self.config.access_token_lifetime_secs.max(3600)
    }

    /// How long a superseded key stays published: anything it signed must be
    /// verifiable until it expires.
    pub fn retention_secs(&self) -> i64 {
        self.max_token_lifetime_secs() + self.config.leeway_secs + 300
    }

    /// `Cache-Control: max-age` for the JWKS: half the pre-publication window
    /// (capped at one hour), so every cache refreshes at least twice between a
    /// key's publication and its first signature; never below a minute unless
    /// the window itself is shorter, and never longer than the window.
    pub fn jwks_max_age(&self) -> i64 {
        (self.config.key_prepublish_secs / 2)
            .clamp(60, 3600)
            .min(self.config.key_prepublish_secs)
    }

    fn seal(&self, kid: &str, alg: Algorithm, secret: &[u8]) -> String {
        let cipher = XChaCha20Poly1305::new((&self.sealing_key).into());
        let nonce_bytes = random_bytes::<24>();
        let nonce = XNonce::from_slice(&nonce_bytes);
        // Encryption with a fresh nonce and in-memory buffers cannot fail.
        let sealed = cipher
            .encrypt(
                nonce,
                Payload {
                    msg: secret,
                    aad: &aad(kid, alg),
                },
            )
            .unwrap_or_default();
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        b64url(&out)
    }

    fn unseal(&self, kid: &str, alg: Algorithm, sealed: &str) -> Result<Vec<u8>, KeyError> {
        let bytes = b64url_decode(sealed)
            .filter(|b| b.len() > 24)
            .ok_or_else(|| KeyError::Corrupt {
                kid: kid.into(),
                reason: "sealed key is not base64url".into(),
            })?;
        let cipher = XChaCha20Poly1305::new((&self.sealing_key).into());
        cipher
            .decrypt(
                XNonce::from_slice(&bytes[..24]),
                Payload {
                    msg: &bytes[24..],
                    aad: &aad(kid, alg),
                },
            )
            .map_err(|_| KeyError::WrongMasterKey { kid: kid.into() })
    }
}

/// A fresh private key of `alg` (RSA with `rsa_bits`).
fn generate_key(alg: Algorithm, rsa_bits: u32) -> Result<SigningKey, KeyError> {
    let bits = if rsa_bits >= 3072 {
        RsaBits::B3072
    } else {
        RsaBits::B2048
    };
    SigningKey::generate(alg, bits).map_err(|e| KeyError::Corrupt {
        kid: String::new(),
        reason: e.to_string(),
    })
}

impl KeyRing {
    /// Inserts a new key of `alg` with the given generation; `Ok(false)` when
    /// another instance inserted that generation first.
    async fn insert(
        &self,
        pool: &Pool,
        alg: Algorithm,
        generation: i64,
        now: UnixTime,
        activates_at: UnixTime,
    ) -> Result<bool, KeyError> {
        // RSA generation takes a while: keep it off the async threads.
        let bits = self.config.rsa_bits;
        let key = tokio::task::spawn_blocking(move || generate_key(alg, bits))
            .await
            .map_err(|e| KeyError::Corrupt {
                kid: String::new(),
                reason: e.to_string(),
            })??;
        let jwk = serde_json::to_string(&key.public_jwk()).unwrap_or_default();
        let sealed = self.seal(key.kid(), alg, &key.to_bytes());
        let inserted = sqlx::query(
            "INSERT INTO signing_keys (kid, alg, generation, sealed_private, public_jwk, created_at, activates_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(key.kid())
        .bind(alg.as_str())
        .bind(generation)
        .bind(sealed)
        .bind(jwk)
        .bind(now)
        .bind(activates_at)
        .execute(pool)
        .await;
        match inserted.map_err(StoreError::from) {
            Ok(_) => {
                tracing::info!(kid = key.kid(), %alg, generation, activates_at, "signing key created");
                Ok(true)
            }
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Loads every key from the database (unsealing them) into the ring.
    pub async fn reload(&self, pool: &Pool) -> Result<(), KeyError> {
        let _serialized = self.reload_lock.lock().await;
        let rows = sqlx::query("SELECT kid, alg, generation, sealed_private, created_at, activates_at, retired_at FROM signing_keys ORDER BY alg, generation")
            .fetch_all(pool)
            .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            let kid: String = row.try_get("kid")?;
            let alg_name: String = row.try_get("alg")?;
            let Some(alg) = Algorithm::parse(&alg_name) else {
                return Err(KeyError::Corrupt {
                    kid,
                    reason: format!("unknown algorithm {alg_name}"),
                });
            };
            let secret = self.unseal(&kid, alg, &row.try_get::<String, _>("sealed_private")?)?;
            let key = SigningKey::from_bytes(alg, &secret).map_err(|e| KeyError::Corrupt {
                kid: kid.clone(),
                reason: e.to_string(),
            })?;
            if key.kid() != kid {
                return Err(KeyError::Corrupt {
                    kid,
                    reason: "thumbprint does not match the stored kid".into(),
                });
            }
            keys.push(RingKey {
                key: Arc::new(key),
                generation: row.try_get("generation")?,
                created_at: row.try_get("created_at")?,
                activates_at: row.try_get("activates_at")?,
                retired_at: row.try_get("retired_at")?,
                superseded_at: None,
            });
        }
        // A key is superseded when the next generation of its algorithm activates.
        for i in 0..keys.len() {
            let next = keys
                .iter()
                .filter(|k| {
                    k.key.algorithm() == keys[i].key.algorithm()
                        && k.generation > keys[i].generation
                        && k.retired_at.is_none()
                })
                .map(|k| k.activates_at)
                .min();
            keys[i].superseded_at = next;
        }
        let mut verify: Vec<_> = keys.iter().map(|k| k.key.verifying_key()).collect();
        if let Some(hs) = self.hs256_key() {
            verify.push(hs.verifying_key());
            keys.push(RingKey {
                key: Arc::new(hs),
                generation: 0,
                created_at: 0,
                activates_at: 0,
                retired_at: None,
                superseded_at: None,
            });
        }
        let snapshot = Snapshot {
            verify: Arc::new(KeySet::new(verify)),
            keys,
        };
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
        Ok(())
    }

    fn hs256_key(&self) -> Option<SigningKey> {
        if self.default_algorithm() != Algorithm::HS256 {
            return None;
        }
        let secret = self
            .config
            .hs256_secret
            .as_deref()
            .and_then(b64url_decode)?;
        SigningKey::from_bytes(Algorithm::HS256, &secret).ok()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Creates missing keys and the next generation when rotation is due, then
    /// reloads. Run at start-up and periodically; safe on every instance.
    pub async fn maintain(&self, pool: &Pool, now: UnixTime) -> Result<(), KeyError> {
        self.reload(pool).await?;
        for alg in self
            .algorithms()
            .iter()
            .copied()
            .filter(|a| a.is_asymmetric())
        {
            let snapshot = self.snapshot();
            let of_alg: Vec<&RingKey> = snapshot
                .keys
                .iter()
                .filter(|k| k.key.algorithm() == alg)
                .collect();
            let newest = of_alg.iter().map(|k| k.generation).max().unwrap_or(0);
            let active = active_of(&of_alg, now);
            match active {
                None if of_alg.iter().all(|k| k.activates_at <= now) => {
                    // First start (or every key retired): a key is needed now.
                    self.insert(pool, alg, newest + 1, now, now).await?;
                }
                None => {} // a published key activates soon
                Some(active) => {
                    let due = active.activates_at + self.config.key_rotation_secs
                        - self.config.key_prepublish_secs;
                    if newest == active.generation && now >= due {
                        let activates_at = (active.activates_at + self.config.key_rotation_secs)
                            .max(now + self.config.key_prepublish_secs);
                        self.insert(pool, alg, newest + 1, now, activates_at)
                            .await?;
                    }
                }
            }
        }
        // Drop keys whose retention ended: nothing they signed is still valid.
        let retention = self.retention_secs();
        for k in self.snapshot().keys.iter().filter(|k| k.generation > 0) {
            if k.signing_ended_at()
                .is_some_and(|end| end + retention <= now)
            {
                sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                    .bind(k.key.kid())
                    .execute(pool)
                    .await?;
                tracing::info!(
                    kid = k.key.kid(),
                    "signing key removed after its retention period"
                );
            }
        }
        self.reload(pool).await
    }

    /// The key that signs new tokens of `alg` at `now`.
    pub fn signing_key(&self, alg: Algorithm, now: UnixTime) -> Result<Arc<SigningKey>, KeyError> {
        let snapshot = self.snapshot();
        let of_alg: Vec<&RingKey> = snapshot
            .keys
            .iter()
            .filter(|k| k.key.algorithm() == alg)
            .collect();
        if alg == Algorithm::HS256 {
            return of_alg
                .first()
                .map(|k| k.key.clone())
                .ok_or(KeyError::NoActiveKey(alg));
        }
        active_of(&of_alg, now)
            .map(|k| k.key.clone())
            .ok_or(KeyError::NoActiveKey(alg))
    }

    /// Every key that may verify a token now (published keys and HS256).
    pub fn verification_keys(&self) -> Arc<KeySet> {
        self.snapshot().verify.clone()
    }

    /// The public JWKS: published asymmetric keys (never HS256).
    pub fn jwks(&self, now: UnixTime) -> JwkSet {
        let retention = self.retention_secs();
        let snapshot = self.snapshot();
        JwkSet {
            keys: snapshot
                .keys
                .iter()
                .filter(|k| k.key.algorithm().is_asymmetric() && k.created_at <= now)
                .filter(|k| k.signing_ended_at().is_none_or(|end| end + retention > now))
                .filter_map(|k| k.key.public_jwk())
                .collect(),
        }
    }

    /// What `latchkey keys list` shows.
    pub fn describe(&self, now: UnixTime) -> Vec<KeyInfo> {
        let retention = self.retention_secs();
        let snapshot = self.snapshot();
        snapshot
            .keys
            .iter()
            .filter(|k| k.generation > 0)
            .map(|k| {
                let ended = k.signing_ended_at();
                let status = if k.activates_at > now && k.retired_at.is_none() {
                    KeyStatus::Next
                } else if ended.is_some_and(|e| e <= now) {
                    KeyStatus::Retired
                } else {
                    KeyStatus::Active
                };
                KeyInfo {
                    kid: k.key.kid().to_owned(),
                    alg: k.key.algorithm().as_str().to_owned(),
                    status,
                    generation: k.generation,
                    created_at: k.created_at,
                    activates_at: k.activates_at,
                    signing_ended_at: ended,
                    remove_at: ended.map(|e| e + retention),
                }
            })
            .collect()
    }

    /// `latchkey keys rotate`: a new key of the default algorithm that is
    /// published now and activates after the pre-publication window.
    pub async fn rotate(&self, pool: &Pool, now: UnixTime) -> Result<String, KeyError> {
        self.reload(pool).await?;
        let alg = self.default_algorithm();
        if !alg.is_asymmetric() {
            return Err(KeyError::Corrupt {
                kid: String::new(),
                reason: "HS256 keys are rotated by changing tokens.hs256_secret".into(),
            });
        }
        let snapshot = self.snapshot();
        let newest = snapshot
            .keys
            .iter()
            .filter(|k| k.key.algorithm() == alg)
            .map(|k| k.generation)
            .max()
            .unwrap_or(0);
        let activates_at = now + self.config.key_prepublish_secs;
        if !self
            .insert(pool, alg, newest + 1, now, activates_at)
            .await?
        {
            return Err(KeyError::Corrupt {
                kid: String::new(),
                reason: "another instance rotated at the same moment; run `keys list`".into(),
            });
        }
        self.reload(pool).await?;
        Ok(self
            .snapshot()
            .keys
            .iter()
            .find(|k| k.key.algorithm() == alg && k.generation == newest + 1)
            .map(|k| k.key.kid().to_owned())
            .unwrap_or_default())
    }

    /// `latchkey keys retire KID`: the key stops signing now. If it was the
    /// active key, the next published key takes over at once (or a new key is
    /// created — tokens it signs may be refused by caches that have not seen
    /// it yet, so prefer `rotate` ahead of time).
    pub async fn retire(&self, pool: &Pool, kid: &str, now: UnixTime) -> Result<(), KeyError> {
        self.reload(pool).await?;
        let snapshot = self.snapshot();
        let Some(target) = snapshot
            .keys
            .iter()
            .find(|k| k.key.kid() == kid && k.generation > 0)
        else {
            return Err(KeyError::UnknownKid(kid.to_owned()));
        };
        let alg = target.key.algorithm();
        let was_active = {
            let of_alg: Vec<&RingKey> = snapshot
                .keys
                .iter()
                .filter(|k| k.key.algorithm() == alg)
                .collect();
            active_of(&of_alg, now).is_some_and(|a| a.key.kid() == kid)
        };
        sqlx::query("UPDATE signing_keys SET retired_at = $2 WHERE kid = $1")
            .bind(kid)
            .bind(now)
            .execute(pool)
            .await?;
        if was_active {
            let next = snapshot
                .keys
                .iter()
                .filter(|k| {
                    k.key.algorithm() == alg
                        && k.generation > target.generation
                        && k.retired_at.is_none()
                })
                .min_by_key(|k| k.generation);
            match next {
                Some(next) => {
                    sqlx::query("UPDATE signing_keys SET activates_at = $2 WHERE kid = $1 AND activates_at > $2").bind(next.key.kid()).bind(now).execute(pool).await?;
                }
                None => {
                    let newest = snapshot
                        .keys
                        .iter()
                        .filter(|k| k.key.algorithm() == alg)
                        .map(|k| k.generation)
                        .max()
                        .unwrap_or(0);
                    self.insert(pool, alg, newest + 1, now, now).await?;
                }
            }
        }
        self.reload(pool).await
    }
}

/// The active key among one algorithm's keys: the highest generation that
/// has activated and is not retired.
fn active_of<'a>(keys: &[&'a RingKey], now: UnixTime) -> Option<&'a RingKey> {
    keys.iter()
        .filter(|k| k.activates_at <= now && k.retired_at.is_none_or(|r| r > now))
        .max_by_key(|k| k.generation)
        .copied()
}
