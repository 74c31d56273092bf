//! WebSockets behind `latchkey-verify`: the upgrade is authenticated by a
//! bearer header, by the `latchkey.bearer` subprotocol pair (the server
//! answers `latchkey.bearer`, never the token), or by the Latchkey session
//! cookie from an allowed origin; an unauthenticated upgrade is a 401; and
//! an open connection is closed with 1008 (policy violation) when its
//! session signs out or its token expires. The client is tokio-tungstenite.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::backend_test;
use crate::support::api::*;
use crate::support::app::*;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_url(api: &TestApi) -> String {
    format!("{}/ws", api.base.replacen("http://", "ws://", 1))
}

async fn connect(
    api: &TestApi,
    headers: &[(&str, String)],
) -> Result<
    (
        Socket,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let mut request = ws_url(api).into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    tokio_tungstenite::connect_async(request).await
}

/// Echo works on an open socket.
async fn assert_echoes(socket: &mut Socket) {
    socket
        .send(Message::Text("ping".into()))
        .await
        .expect("send");
    let answer = tokio::time::timeout(Duration::from_secs(2), socket.next())
        .await
        .expect("an answer")
        .expect("a frame")
        .expect("readable");
    assert_eq!(answer, Message::Text("ping".into()));
}

/// The close frame the server sends, waited for with a deadline.
async fn closed_with(socket: &mut Socket, limit: Duration) -> (CloseCode, String) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("not closed within {limit:?}"));
        match frame {
            Some(Ok(Message::Close(Some(close)))) => {
                return (close.code, close.reason.to_string());
            }
            Some(Ok(Message::Close(None))) | None => panic!("closed without a close code"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error before the close frame: {e}"),
        }
    }
}

async fn api_with_feed(
    app: &TestApp,
    customize: impl FnOnce(latchkey_verify::VerifierBuilder) -> latchkey_verify::VerifierBuilder,
) -> TestApi {
    let feed = feed_client(app).await;
    let builder = verifier_for(&app.base, app)
        .revocation_feed(&feed.id, feed.secret.as_deref().expect("secret"));
    TestApi::start(customize(builder).build().await.expect("verifier")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_with_bearer_header_or_subprotocol_and_401_without() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let web = web_client(&app).await;
    let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
    let api = api_with_feed(&app, |b| b).await;

    let (mut socket, response) = connect(
        &api,
        &[("authorization", format!("Bearer {}", ada.access_token))],
    )
    .await
    .expect("bearer upgrade");
    assert_eq!(response.status(), 101);
    assert!(response.headers().get("sec-websocket-protocol").is_none());
    assert_echoes(&mut socket).await;

    // Browsers: the token travels as a subprotocol; only the marker is answered.
    let offered = format!("latchkey.bearer, latchkey.bearer.{}", ada.access_token);
    let (mut socket, response) = connect(&api, &[("sec-websocket-protocol", offered)])
        .await
        .expect("subprotocol upgrade");
    assert_eq!(
        response.headers()["sec-websocket-protocol"]
            .to_str()
            .expect("ascii"),
        "latchkey.bearer"
    );
    assert_echoes(&mut socket).await;

    for (what, headers) in [
        ("no credential", vec![]),
        (
            "bad token",
            vec![("authorization", "Bearer not.a.token".to_owned())],
        ),
        (
            "token subprotocol without the marker",
            vec![(
                "sec-websocket-protocol",
                format!("latchkey.bearer.{}", ada.access_token),
            )],
        ),
        (
            "session cookie from an origin not allowed",
            vec![
                ("cookie", "latchkey_session=whatever".to_owned()),
                ("origin", "https://evil.example".to_owned()),
            ],
        ),
    ] {
        match connect(&api, &headers).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{what}");
                assert!(
                    response.headers().get("www-authenticate").is_some(),
                    "{what}: {response:?}"
                );
            }
            other => panic!("{what}: expected a 401, got {other:?}"),
        }
    }
}

backend_test!(
    websocket_is_closed_with_1008_when_its_session_signs_out,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
        let bob = sign_in(&app, &web, "bob@example.com", &[]).await;
        let api = api_with_feed(&app, |b| b).await;
        let (mut ada_socket, _) = connect(
            &api,
            &[("authorization", format!("Bearer {}", ada.access_token))],
        )
        .await
        .expect("upgrade");
        let (mut bob_socket, _) = connect(
            &api,
            &[("authorization", format!("Bearer {}", bob.access_token))],
        )
        .await
        .expect("upgrade");
        assert_echoes(&mut ada_socket).await;

        ada.sign_out(&app).await;
        let (code, reason) = closed_with(&mut ada_socket, Duration::from_secs(1)).await;
        assert_eq!(code, CloseCode::Policy, "1008");
        assert_eq!(u16::from(code), 1008);
        assert_eq!(reason, "token revoked");
        // Another user's connection stays open.
        assert_echoes(&mut bob_socket).await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_is_closed_with_1008_when_its_token_expires() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let web = web_client(&app).await;
    let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
    let api = api_with_feed(&app, |b| b).await;
    let (mut socket, _) = connect(
        &api,
        &[("authorization", format!("Bearer {}", ada.access_token))],
    )
    .await
    .expect("upgrade");
    assert_echoes(&mut socket).await;
    let exp = claims_of(&ada.access_token)["exp"].as_i64().expect("exp");
    // Past exp + the 30 s leeway, by the clock the verifier reads.
    app.clock.set(exp + 31);
    let (code, reason) = closed_with(&mut socket, Duration::from_secs(3)).await;
    assert_eq!(u16::from(code), 1008);
    assert_eq!(reason, "token expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_with_the_session_cookie_from_an_allowed_origin_closes_on_sign_out() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    app.create_user("ada@example.com", PASSWORD, &["staff"])
        .await;
    let browser = new_client();
    let login = app.login_with(&browser, "ada@example.com", PASSWORD).await;
    let cookie = session_cookie_of(&login).expect("session cookie");
    let page = "http://127.0.0.1:5173";
    let api = api_with_feed(&app, |b| b.websocket_cookie_origins([page])).await;
    let headers = [
        ("cookie", format!("theme=dark; latchkey_session={cookie}")),
        ("origin", page.to_owned()),
    ];
    let (mut socket, response) = connect(&api, &headers).await.expect("cookie upgrade");
    assert_eq!(response.status(), 101);
    assert_echoes(&mut socket).await;

    let csrf = app.account_csrf(&browser).await;
    let out = browser
        .post(app.url("/logout"))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), 303);
    let (code, reason) = closed_with(&mut socket, Duration::from_secs(1)).await;
    assert_eq!(u16::from(code), 1008);
    assert_eq!(reason, "token revoked");

    // The signed-out cookie no longer opens a socket.
    match connect(&api, &headers).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected 401, got {other:?}"),
    }
}
