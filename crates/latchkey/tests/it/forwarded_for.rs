//! The client address behind reverse proxies (`http.trust_forwarded_for`,
//! `http.trusted_proxy_hops`): every `X-Forwarded-For` line counts, in order,
//! and the client is the entry that many hops from the right — whatever the
//! client itself wrote to the left. IPv6 clients share per-IP limits across
//! their /64. What the server chose is read back from the audit log (the
//! `ip` of each failed sign-in) and from the per-IP lockout.

use reqwest::header::{HeaderMap, HeaderValue};

use crate::backend_test;
use crate::support::app::*;

/// A failed sign-in (unknown account `who`) whose request carries each of
/// `lines` as its own `X-Forwarded-For` header line, in order. Returns the status.
async fn failed_sign_in(app: &TestApp, who: &str, lines: &[&str]) -> u16 {
    let browser = new_client();
    let csrf = app.login_csrf(&browser).await;
    let mut headers = HeaderMap::new();
    for line in lines {
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_str(line).expect("a header value"),
        );
    }
    browser
        .post(app.url("/login"))
        .headers(headers)
        .form(&[
            ("email", who),
            ("password", "not the password"),
            ("csrf_token", csrf.as_str()),
        ])
        .send()
        .await
        .expect("post login")
        .status()
        .as_u16()
}

/// The `ip` the audit log recorded for the latest failed sign-in of `who`.
async fn recorded_ip(app: &TestApp, who: &str) -> String {
    latchkey::audit::tail(&app.state.pool, 1000)
        .await
        .expect("audit")
        .into_iter()
        .find(|e| e.kind == "login_failed" && e.subject == who)
        .unwrap_or_else(|| panic!("no login_failed for {who}"))
        .ip
}

backend_test!(
    x_forwarded_for_lines_are_combined_and_the_proxys_line_names_the_client,
    config = |c: &mut latchkey::Config| {
        c.http.trust_forwarded_for = true;
        c.login.max_failures_per_ip = 3;
        c.login.max_failures_per_account = 100;
    },
    |app: TestApp| async move {
        // The client writes its own line (a new forged address each time);
        // the proxy appends the line with the address it saw.
        for i in 0..3 {
            let who = format!("victim{i}@example.com");
            let forged = format!("192.0.2.{}", 10 + i);
            let status = failed_sign_in(&app, &who, &[&forged, "203.0.113.7"]).await;
            assert_eq!(status, 401, "failure {i} is counted, not locked yet");
            assert_eq!(recorded_ip(&app, &who).await, "203.0.113.7", "failure {i}");
        }
        let status = failed_sign_in(&app, "next@example.com", &["192.0.2.99", "203.0.113.7"]).await;
        assert_eq!(
            status, 429,
            "the address the proxy saw is locked, whatever the client forged"
        );
        // A forged line after the proxy's is impossible (the proxy appends
        // last); a request from another client address goes on.
        assert_eq!(
            failed_sign_in(&app, "other@example.com", &["192.0.2.99", "203.0.113.8"]).await,
            401
        );
        assert_eq!(recorded_ip(&app, "other@example.com").await, "203.0.113.8");
        // One line with several entries (nginx's $proxy_add_x_forwarded_for) reads the same.
        assert_eq!(
            failed_sign_in(&app, "joined@example.com", &["192.0.2.1, 203.0.113.9"]).await,
            401
        );
        assert_eq!(recorded_ip(&app, "joined@example.com").await, "203.0.113.9");
    }
);

backend_test!(
    x_forwarded_for_hostile_entries_never_choose_the_client_address,
    config = |c: &mut latchkey::Config| {
        c.http.trust_forwarded_for = true;
        c.http.trusted_proxy_hops = 2;
        c.login.max_failures_per_account = 100;
        c.login.max_failures_per_ip = 100;
    },
    |app: TestApp| async move {
        let many: String = (0..500)
            .map(|i| format!("10.{}.{}.1", i / 256, i % 256))
            .collect::<Vec<_>>()
            .join(", ");
        let forged_lines: Vec<String> = (0..40).map(|i| format!("198.18.0.{i}")).collect();
        // (what, X-Forwarded-For lines, expected client address)
        let cases: Vec<(&str, Vec<&str>, &str)> = vec![
            (
                "two proxies: the client is the second entry from the right",
                vec!["203.0.113.50, 10.0.0.2"],
                "203.0.113.50",
            ),
            (
                "spoofed left-most entries",
                vec!["1.1.1.1, 8.8.8.8, 203.0.113.51, 10.0.0.2"],
                "203.0.113.51",
            ),
            (
                "each proxy appends its own line",
                vec!["1.1.1.1", "203.0.113.52", "10.0.0.2"],
                "203.0.113.52",
            ),
            (
                "garbage to the left of the trusted entries",
                vec![
                    "<script>, not-an-ip, 999.1.1.1, , unknown",
                    "203.0.113.53, 10.0.0.2",
                ],
                "203.0.113.53",
            ),
            (
                "five hundred forged entries",
                vec![many.as_str(), "203.0.113.54", "10.0.0.2"],
                "203.0.113.54",
            ),
            (
                "an IPv6 client with brackets and a port, as some proxies write it",
                vec!["[2001:db8::55]:4711, 10.0.0.2"],
                "2001:db8::55",
            ),
            (
                "an IPv4 client with a port",
                vec!["203.0.113.56:51000", "10.0.0.2"],
                "203.0.113.56",
            ),
            (
                "an IPv4-mapped IPv6 address is the IPv4 address",
                vec!["::ffff:203.0.113.57, 10.0.0.2"],
                "203.0.113.57",
            ),
            (
                "fewer entries than hops: the left-most, written by a trusted proxy",
                vec!["203.0.113.58"],
                "203.0.113.58",
            ),
            (
                "the trusted entry is garbage: the socket peer, never a guess",
                vec!["203.0.113.59, unknown, 10.0.0.2"],
                "127.0.0.1",
            ),
        ];
        let mut cases = cases;
        let mut forged: Vec<&str> = forged_lines.iter().map(String::as_str).collect();
        forged.extend(["203.0.113.60", "10.0.0.2"]);
        cases.push(("forty header lines", forged, "203.0.113.60"));
        for (i, (what, lines, expected)) in cases.iter().enumerate() {
            let who = format!("case{i}@example.com");
            assert_eq!(failed_sign_in(&app, &who, lines).await, 401, "{what}");
            assert_eq!(&recorded_ip(&app, &who).await, expected, "{what}");
        }
    }
);

backend_test!(
    x_forwarded_for_is_ignored_unless_trusted,
    |app: TestApp| async move {
        assert_eq!(
            failed_sign_in(&app, "a@example.com", &["203.0.113.7"]).await,
            401
        );
        assert_eq!(recorded_ip(&app, "a@example.com").await, "127.0.0.1");
    }
);

backend_test!(
    ipv6_clients_share_per_ip_limits_across_their_64,
    config = |c: &mut latchkey::Config| {
        c.http.trust_forwarded_for = true;
        c.login.max_failures_per_ip = 3;
        c.login.max_failures_per_account = 100;
    },
    |app: TestApp| async move {
        // Three addresses of one /64 (a client can pick any of 2^64).
        for (i, ip) in [
            "2001:db8:a:b::1",
            "2001:db8:a:b:1::2",
            "2001:db8:a:b:ffff::3",
        ]
        .iter()
        .enumerate()
        {
            let who = format!("v6-{i}@example.com");
            assert_eq!(failed_sign_in(&app, &who, &[ip]).await, 401, "{ip}");
            // The audit log keeps the full address.
            assert_eq!(&recorded_ip(&app, &who).await, ip);
        }
        assert_eq!(
            failed_sign_in(&app, "v6-next@example.com", &["2001:db8:a:b:dead:beef::4"]).await,
            429,
            "another address of the same /64 is locked"
        );
        assert_eq!(
            failed_sign_in(&app, "v6-other@example.com", &["2001:db8:a:c::1"]).await,
            401,
            "the next /64 is another client"
        );
        // IPv4 addresses are counted one by one.
        assert_eq!(
            failed_sign_in(&app, "v4@example.com", &["203.0.113.1"]).await,
            401
        );
    }
);
