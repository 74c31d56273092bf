//! The algorithm of ID tokens (OIDC Core §15.1, Discovery §3): RS256 by
//! default, with an RS256 key kept next to the access tokens' default from the
//! first start — also for a database that has none yet — and a per-client
//! choice, `id_token_signed_response_alg`, that the CLI sets and validates.
//! The tokens themselves are verified by `openidconnect` in `oidc_rp`
//! (`id_tokens_are_rs256_by_default_…`, `a_client_picks_its_id_token_algorithm_…`).

use serde_json::Value;

use crate::backend_test;
use crate::support::api::second_instance;
use crate::support::app::*;
use crate::support::app::{cli_database, drop_database};
use crate::support::cli::{env, latchkey};

async fn published_algorithms(base: &str) -> Vec<String> {
    let jwks: Value = new_client()
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let mut algs: Vec<String> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["alg"].as_str().expect("alg").to_owned())
        .collect();
    algs.sort();
    algs
}

backend_test!(
    a_database_without_an_rs256_key_gets_one_when_the_server_starts,
    |app: TestApp| async move {
        assert_eq!(published_algorithms(&app.base).await, ["ES256", "RS256"]);
        // A database written before ID tokens defaulted to RS256 has only the
        // configured algorithm's keys.
        sqlx::query("DELETE FROM signing_keys WHERE alg = 'RS256'")
            .execute(&app.state.pool)
            .await
            .expect("delete");
        let count = |alg: &'static str| {
            let pool = app.state.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM signing_keys WHERE alg = $1")
                    .bind(alg)
                    .fetch_one(&pool)
                    .await
                    .expect("count")
            }
        };
        assert_eq!(count("RS256").await, 0);
        // A server starting on it creates the RS256 key at once and publishes it.
        let (base, _stop) = second_instance(&app).await;
        assert_eq!(count("RS256").await, 1);
        assert_eq!(
            count("ES256").await,
            1,
            "the ES256 key is kept, not replaced"
        );
        assert_eq!(published_algorithms(&base).await, ["ES256", "RS256"]);
        let discovery: Value = new_client()
            .get(format!("{base}/.well-known/openid-configuration"))
            .send()
            .await
            .expect("discovery")
            .json()
            .await
            .expect("json");
        assert_eq!(
            discovery["id_token_signing_alg_values_supported"],
            serde_json::json!(["ES256", "RS256"])
        );
    }
);

async fn cli_sets_validates_and_resets_the_id_token_algorithm(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(url) = cli_database(backend, dir.path()).await else {
        return;
    };
    let env = env(&[("LATCHKEY_DATABASE_URL", &url)]);
    let base = [
        "client",
        "create",
        "--name",
        "rp",
        "--redirect-uri",
        "https://rp.example.com/cb",
        "--grant",
        "authorization_code",
        "--scope",
        "openid",
    ];
    let default = latchkey(dir.path(), &env, &[&base[..], &["--json"]].concat(), None).await;
    default.assert_success("a client with the default");
    assert_eq!(default.json()["id_token_signed_response_alg"], Value::Null);

    let created = latchkey(
        dir.path(),
        &env,
        &[
            &base[..],
            &["--id-token-signed-response-alg", "ES256", "--json"],
        ]
        .concat(),
        None,
    )
    .await;
    created.assert_success("ES256 ID tokens");
    assert_eq!(created.json()["id_token_signed_response_alg"], "ES256");
    assert_eq!(
        created.json()["signing_algorithm"],
        Value::Null,
        "the access tokens' algorithm is a separate choice"
    );
    let id = created.json()["client_id"].as_str().expect("id").to_owned();

    // Refused: a shared secret, an algorithm we do not implement, `none`,
    // and one the deployment keeps no key for (EdDSA is not configured here).
    for alg in ["HS256", "PS256", "none", "EdDSA", "rs256"] {
        latchkey(
            dir.path(),
            &env,
            &[&base[..], &["--id-token-signed-response-alg", alg]].concat(),
            None,
        )
        .await
        .assert_failure(alg, &["--id-token-signed-response-alg", "RS256"]);
        latchkey(
            dir.path(),
            &env,
            &[
                "client",
                "update",
                &id,
                "--id-token-signed-response-alg",
                alg,
            ],
            None,
        )
        .await
        .assert_failure(alg, &["--id-token-signed-response-alg", "RS256"]);
    }
    // The refused updates changed nothing.
    let unchanged = latchkey(dir.path(), &env, &["client", "update", &id, "--json"], None).await;
    unchanged.assert_success("an update that changes nothing");
    assert_eq!(unchanged.json()["id_token_signed_response_alg"], "ES256");

    let reset = latchkey(
        dir.path(),
        &env,
        &[
            "client",
            "update",
            &id,
            "--id-token-signed-response-alg",
            "default",
            "--json",
        ],
        None,
    )
    .await;
    reset.assert_success("back to the default");
    assert_eq!(reset.json()["id_token_signed_response_alg"], Value::Null);
    let rs256 = latchkey(
        dir.path(),
        &env,
        &[
            "client",
            "update",
            &id,
            "--id-token-signed-response-alg",
            "RS256",
            "--json",
        ],
        None,
    )
    .await;
    rs256.assert_success("RS256 by name");
    assert_eq!(rs256.json()["id_token_signed_response_alg"], "RS256");
    // A client whose old count of clients rows is listed with the new field.
    let listed = latchkey(dir.path(), &env, &["client", "list", "--json"], None).await;
    listed.assert_success("list");
    assert_eq!(listed.json().as_array().map(Vec::len), Some(2));
    if backend == Backend::Postgres {
        drop_database(&url).await;
    }
}

mod cli_client_id_token_signed_response_alg_is_validated_and_stored {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        cli_sets_validates_and_resets_the_id_token_algorithm(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        cli_sets_validates_and_resets_the_id_token_algorithm(Backend::Postgres).await;
    }
}
