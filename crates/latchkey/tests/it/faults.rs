//! Faults the server survives without a restart: a full disk under SQLite.
//! Each answers clear errors (503 with `Retry-After`, never 500), reports
//! not-ready on `/readyz` while writes fail, and recovers by itself once the
//! cause is gone. (A PostgreSQL outage: `storage::database_outage_answers_503_and_recovers_without_restart`.)

use latchkey::clock::ManualClock;
use latchkey::crypto::MasterKey;

use crate::support::app::{self, Backend, TestApp};
use crate::support::disk::SmallDisk;
use crate::support::PASSWORD;

async fn readyz(app: &TestApp) -> u16 {
    reqwest::get(app.url("/readyz"))
        .await
        .expect("readyz")
        .status()
        .as_u16()
}

/// A sign-in through the real form: a write (a session row, an audit event).
async fn sign_in_status(app: &TestApp) -> (u16, Option<String>) {
    let response = app
        .login_with(&app::new_client(), "ada@example.com", PASSWORD)
        .await;
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (response.status().as_u16(), retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sqlite_disk_answers_503_reports_not_ready_and_recovers_once_space_returns() {
    let Some(disk) = SmallDisk::mount("8m") else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut config = app::test_config(format!(
        "sqlite://{}?mode=rwc",
        disk.path().join("latchkey.db").display()
    ));
    config.issuer = format!("http://127.0.0.1:{port}");
    let clock = ManualClock::new(app::time_now());
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start_on(
        listener,
        config,
        MasterKey::generate(),
        clock,
        dir,
        Backend::Sqlite,
    )
    .await;
    app.create_user("ada@example.com", PASSWORD, &[]).await;
    assert_eq!(sign_in_status(&app).await.0, 303);
    assert_eq!(readyz(&app).await, 200);

    disk.fill();
    // Writes fail: each sign-in is refused with 503 and Retry-After (never
    // 500); SQLite may still find room in its files for the first few.
    let mut refused = 0;
    for attempt in 0..200 {
        let (status, retry_after) = sign_in_status(&app).await;
        match status {
            303 => {}
            503 => {
                assert!(retry_after.is_some(), "attempt {attempt}: Retry-After");
                refused += 1;
            }
            other => panic!("attempt {attempt}: {other} on a full disk"),
        }
        if refused == 5 {
            break;
        }
    }
    assert_eq!(refused, 5, "writes fail on a full disk");
    assert_eq!(readyz(&app).await, 503, "not ready while writes fail");

    disk.free();
    // Space is back: writes recover by themselves — no restart.
    let (status, _) = sign_in_status(&app).await;
    assert_eq!(status, 303, "the first sign-in after space returned");
    for _ in 0..5 {
        assert_eq!(sign_in_status(&app).await.0, 303);
    }
    assert_eq!(readyz(&app).await, 200, "ready again");
}
