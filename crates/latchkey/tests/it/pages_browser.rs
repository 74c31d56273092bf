//! The pages a newcomer meets, in a real headless Chromium at a desktop width
//! and at a 390 px phone width: error pages with the header bar, readable
//! input borders, tables that fit a phone, devices and relative times in the
//! sessions list, the authenticator-app link, branding, no passkey error
//! before anyone acted, the first administrator's way to `/admin`, and the
//! handed-out password replaced at the first sign-in.
//!
//! Like `passkeys_browser`, they run whenever `/usr/bin/chromium` exists and
//! are required on CI (`LATCHKEY_TEST_BROWSER=1`).

use chromiumoxide::cdp::browser_protocol::emulation::{
    SetDeviceMetricsOverrideParams, SetUserAgentOverrideParams,
};
use latchkey::config::Config;
use latchkey::identity::{self, Role};
use latchkey::mfa::totp::Totp;
use serde_json::Value;

use crate::support::app::base32_decode;
use crate::support::app::ClockExt as _;
use crate::support::app::TestApp;
use crate::support::browser::{chromium_available, Session};

use crate::support::PASSWORD;
/// The widths every changed page is checked at: a laptop and a phone.
const WIDTHS: [i64; 2] = [1280, 390];
const CHROME_ON_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// Declares a page test on SQLite and PostgreSQL: `page_test!(name, start,
/// customize, |app, browser| { ... })`.
macro_rules! page_test {
    ($name:ident, $start:expr, $customize:expr, |$app:ident, $browser:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run(backend: $crate::support::app::Backend) {
                if !chromium_available() {
                    return;
                }
                let Some(app) = TestApp::spawn_localhost_with(backend, $customize).await else {
                    return;
                };
                let browser = $start.await;
                {
                    let $app = &app;
                    let $browser = &browser;
                    $body
                }
                browser.close().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run($crate::support::app::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run($crate::support::app::Backend::Postgres).await;
            }
        }
    };
}

fn default_config(_: &mut Config) {}

async fn set_width(browser: &Session, width: i64) {
    browser
        .page
        .execute(SetDeviceMetricsOverrideParams::new(
            width,
            844,
            1.0,
            width < 600,
        ))
        .await
        .expect("Emulation.setDeviceMetricsOverride");
}

/// Nothing sticks out sideways: no horizontal scrolling, and every table and
/// form ends inside the window. Returns the offenders.
async fn overflow(browser: &Session) -> Value {
    browser
        .eval(
            "(() => { const w = window.innerWidth; const out = []; \
             if (document.documentElement.scrollWidth > w) out.push('page ' + document.documentElement.scrollWidth + ' > ' + w); \
             for (const e of document.querySelectorAll('table, form, input, pre, code, svg')) { \
               const r = e.getBoundingClientRect(); if (r.right > w + 0.5) out.push((e.id || e.tagName) + ' ends at ' + Math.round(r.right)); } \
             return out; })()",
        )
        .await
}

#[track_caller]
fn assert_fits(offenders: &Value, what: &str, width: i64) {
    assert_eq!(
        offenders,
        &Value::Array(Vec::new()),
        "{what} at {width} px overflows"
    );
}

async fn text(browser: &Session, selector: &str) -> String {
    browser
        .eval(&format!(
            "(document.querySelector({selector:?}) || {{ textContent: '' }}).textContent.trim()"
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Types `email` and the password into the real form and submits it.
async fn submit_password(app: &TestApp, browser: &Session, email: &str, next: &str) {
    browser.goto(&app.url(&format!("/login?next={next}"))).await;
    browser
        .eval(&format!(
            "document.getElementById('email').value = {email:?}; \
             document.getElementById('password').value = {PASSWORD:?}; true"
        ))
        .await;
    browser
        .click("form[action='/login'] button[type=submit]")
        .await;
}

async fn make_admin(app: &TestApp, email: &str) -> identity::User {
    let user = app.create_user(email, PASSWORD, &[]).await;
    identity::set_roles(
        &app.state.pool,
        &user.id,
        &[Role::parse(Role::ADMIN).expect("role")],
        app.clock.now_secs(),
    )
    .await
    .expect("grant admin");
    user
}

page_test!(
    error_pages_have_the_header_bar_and_a_capitalised_message,
    Session::without_autofill(),
    default_config,
    |app, browser| {
        for width in WIDTHS {
            set_width(browser, width).await;
            // Our own 404, and a framework rejection (GET on a POST-only route).
            for (path, title) in [
                ("/no-such-page", "Not Found"),
                ("/logout", "Method Not Allowed"),
            ] {
                browser.goto(&app.url(path)).await;
                assert_eq!(
                    text(browser, "header.bar .brand").await,
                    "Latchkey",
                    "{path}"
                );
                assert_eq!(text(browser, "#error-title").await, title, "{path}");
                let message = text(browser, "#error-message").await;
                assert!(
                    message.chars().next().is_some_and(char::is_uppercase),
                    "{path}: {message:?} starts with a capital"
                );
                assert_eq!(
                    browser.eval("document.title").await,
                    format!("{title} · Latchkey"),
                    "{path}"
                );
                assert_fits(&overflow(browser).await, path, width);
            }
        }
    }
);

page_test!(
    input_borders_contrast_at_least_3_to_1_with_the_card,
    Session::without_autofill(),
    default_config,
    |app, browser| {
        browser.goto(&app.url("/login")).await;
        let colours = browser
            .eval(
                "(() => { const rgb = s => s.match(/\\d+/g).slice(0, 3).map(Number); \
                 return { border: rgb(getComputedStyle(document.getElementById('email')).borderTopColor), \
                          card: rgb(getComputedStyle(document.querySelector('main.card')).backgroundColor) }; })()",
            )
            .await;
        let rgb = |v: &Value| -> [u8; 3] {
            let a = v.as_array().expect("rgb");
            [0, 1, 2].map(|i| a[i].as_u64().expect("channel") as u8)
        };
        let ratio =
            latchkey::config::contrast_ratio(rgb(&colours["border"]), rgb(&colours["card"]));
        assert!(
            ratio >= 3.0,
            "input border contrast {ratio:.2}:1 ({colours})"
        );
    }
);

/// A browser that offers passkey autofill, whose autofill request fails at
/// once as it does when no passkey is available (Chromium may answer
/// `NotAllowedError` then); the page records that it happened.
const AUTOFILL_REJECTED: &str = "(() => { const get = navigator.credentials.get.bind(navigator.credentials); \
    Object.defineProperty(PublicKeyCredential, 'isConditionalMediationAvailable', { value: () => Promise.resolve(true) }); \
    navigator.credentials.get = (options) => { if (options && options.mediation === 'conditional') { \
      return new Promise((_, reject) => setTimeout(() => { window.__autofillRejected = true; \
        reject(new DOMException('No passkey available', 'NotAllowedError')); }, 10)); } return get(options); }; })()";

page_test!(
    the_sign_in_page_shows_no_passkey_error_before_the_user_acts,
    Session::start(&[AUTOFILL_REJECTED]),
    default_config,
    |app, browser| {
        for width in WIDTHS {
            set_width(browser, width).await;
            browser.goto(&app.url("/login")).await;
            browser.wait_for("window.__autofillRejected === true").await;
            // The rejection has been handled by the time the button shows.
            browser
                .wait_for("!document.getElementById('passkey-sign-in').hidden")
                .await;
            browser.eval("new Promise(r => setTimeout(r, 0))").await;
            assert_eq!(text(browser, "#passkey-status").await, "", "at {width} px");
            assert_eq!(
                browser
                    .eval("document.querySelectorAll('.error').length")
                    .await,
                0
            );
            assert_fits(&overflow(browser).await, "/login", width);
        }
    }
);

page_test!(
    tables_fit_a_phone_and_sessions_name_the_device_and_say_how_long_ago,
    Session::without_autofill(),
    default_config,
    |app, browser| {
        browser
            .page
            .execute(SetUserAgentOverrideParams::new(CHROME_ON_LINUX))
            .await
            .expect("Emulation.setUserAgentOverride");
        make_admin(app, "ada@example.com").await;
        // A passkey: the passkeys table exists, and (being a second factor
        // in itself) its sign-in may use /admin.
        submit_password(app, browser, "ada@example.com", "/account").await;
        browser.wait_for("location.pathname === '/account'").await;
        browser
            .add_passkey(app, "A rather long passkey name for a phone")
            .await;
        browser.sign_out().await;
        browser.goto(&app.url("/login")).await;
        browser.click("#passkey-sign-in").await;
        browser.wait_for("location.pathname === '/account'").await;

        for width in WIDTHS {
            set_width(browser, width).await;
            for (path, table) in [
                ("/account", "#sessions"),
                ("/account/passkeys", "#passkeys"),
                ("/admin", "#users"),
            ] {
                browser.goto(&app.url(path)).await;
                assert_eq!(
                    browser
                        .eval(&format!("!!document.querySelector({table:?})"))
                        .await,
                    true,
                    "{path} has {table}"
                );
                assert_fits(&overflow(browser).await, path, width);
                // Desktop: a table with its header row; phone: labelled blocks.
                let header_shown = browser
                    .eval(&format!(
                        "document.querySelector('{table} thead').getBoundingClientRect().height > 2"
                    ))
                    .await;
                assert_eq!(header_shown, width > 600, "{path} {table} at {width} px");
            }
            browser.goto(&app.url("/account")).await;
            let current = browser
                .eval(
                    "(() => { const row = document.querySelector('#sessions tr.current'); \
                     const times = [...row.querySelectorAll('time')]; \
                     return { device: row.querySelector('.device').textContent, \
                              raw: row.querySelector('.device').title, \
                              ago: times.map(t => t.textContent), \
                              utc: times.map(t => t.title), \
                              iso: times.map(t => t.getAttribute('datetime')) }; })()",
                )
                .await;
            assert_eq!(current["device"], "Chrome on Linux", "{current}");
            assert_eq!(current["raw"], CHROME_ON_LINUX);
            for i in 0..2 {
                assert_eq!(current["ago"][i], "just now", "{current}");
                assert!(
                    current["utc"][i]
                        .as_str()
                        .is_some_and(|t| t.ends_with(" UTC")),
                    "{current}"
                );
                assert!(
                    current["iso"][i].as_str().is_some_and(|t| t.ends_with('Z')),
                    "{current}"
                );
            }
        }
        // Time passes (the injected clock, within the idle timeout): the
        // sign-in now reads "10 minutes ago".
        app.clock.advance(10 * 60);
        browser.goto(&app.url("/account")).await;
        assert_eq!(
            text(browser, "#sessions tr.current time").await,
            "10 minutes ago"
        );
    }
);

page_test!(
    branding_names_the_product_in_pages_and_in_the_authenticator_app,
    Session::without_autofill(),
    |config: &mut Config| {
        config.ui.product_name = "Acme ID".into();
        config.ui.primary_color = "#0b6e4f".into();
        config.ui.logo_url = "/static/logo.svg".into();
    },
    |app, browser| {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        for width in WIDTHS {
            set_width(browser, width).await;
            browser.goto(&app.url("/login")).await;
            assert_eq!(text(browser, "header.bar .brand").await, "Acme ID");
            assert_eq!(browser.eval("document.title").await, "Sign in · Acme ID");
            assert_eq!(
                browser
                    .eval(
                        "document.querySelector('header.bar .brand img.logo').getAttribute('src')"
                    )
                    .await,
                "/static/logo.svg"
            );
            assert_eq!(
                browser
                    .eval("getComputedStyle(document.querySelector('form[action=\"/login\"] button')).backgroundColor")
                    .await,
                "rgb(11, 110, 79)"
            );
            assert_fits(&overflow(browser).await, "/login", width);
        }
        submit_password(app, browser, "ada@example.com", "/account").await;
        browser.wait_for("location.pathname === '/account'").await;
        browser.goto(&app.url("/account/mfa")).await;
        browser
            .click("form[action='/account/mfa/totp/start'] button")
            .await;
        browser
            .wait_for("!!document.getElementById('otpauth-link')")
            .await;
        let href = browser
            .eval("document.getElementById('otpauth-link').getAttribute('href')")
            .await;
        let href = href.as_str().expect("href");
        assert!(href.starts_with("otpauth://totp/"), "{href}");
        assert!(
            href.contains("issuer=Acme%20ID"),
            "the product name is the issuer: {href}"
        );
        let secret = text(browser, "#totp-secret").await;
        assert!(
            href.contains(&format!("secret={secret}")),
            "the link carries the key shown: {href}"
        );
        for width in WIDTHS {
            set_width(browser, width).await;
            assert_fits(&overflow(browser).await, "/account/mfa enrolment", width);
        }
    }
);

page_test!(
    a_handed_out_password_is_replaced_at_the_first_sign_in,
    Session::without_autofill(),
    default_config,
    |app, browser| {
        let user = make_admin(app, "admin@localhost").await;
        identity::set_must_change_password(&app.state.pool, &user.id, true, app.clock.now_secs())
            .await
            .expect("flag");
        submit_password(app, browser, "admin@localhost", "/account").await;
        browser
            .wait_for("location.pathname === '/account/password'")
            .await;
        for width in WIDTHS {
            set_width(browser, width).await;
            // Every other page leads back here until the password is replaced.
            for path in ["/account", "/admin", "/account/mfa"] {
                browser.goto(&app.url(path)).await;
                assert_eq!(
                    browser.path().await,
                    "/account/password?required=1",
                    "{path} at {width} px"
                );
                assert!(text(browser, "#password-required")
                    .await
                    .contains("passkey"));
                assert_eq!(text(browser, "h1").await, "Choose your own password");
                assert_fits(&overflow(browser).await, "/account/password", width);
            }
        }
        // The same password again is refused.
        browser
            .eval(&format!(
                "document.getElementById('current_password').value = {PASSWORD:?}; \
                 document.getElementById('new_password').value = {PASSWORD:?}; true"
            ))
            .await;
        browser
            .click("form[action='/account/password'] button[type=submit]")
            .await;
        browser
            .wait_for("!!document.querySelector('p.error')")
            .await;
        assert!(text(browser, "p.error").await.contains("current password"));
        browser
            .eval(&format!(
                "document.getElementById('current_password').value = {PASSWORD:?}; \
                 document.getElementById('new_password').value = 'my very own passphrase'; true"
            ))
            .await;
        browser
            .click("form[action='/account/password'] button[type=submit]")
            .await;
        browser
            .wait_for("!!document.getElementById('password-continue')")
            .await;
        browser.click("#password-continue").await;
        browser.wait_for("location.pathname === '/account'").await;
        let stored = identity::find(&app.state.pool, &user.id)
            .await
            .expect("user");
        assert!(!stored.must_change_password);
    }
);

page_test!(
    a_passkey_also_replaces_a_handed_out_password,
    Session::without_autofill(),
    default_config,
    |app, browser| {
        let user = app.create_user("ada@example.com", PASSWORD, &[]).await;
        identity::set_must_change_password(&app.state.pool, &user.id, true, app.clock.now_secs())
            .await
            .expect("flag");
        submit_password(app, browser, "ada@example.com", "/account").await;
        browser
            .wait_for("location.pathname === '/account/password'")
            .await;
        browser
            .click("#password-required a[href='/account/passkeys']")
            .await;
        browser
            .wait_for("location.pathname === '/account/passkeys'")
            .await;
        browser.add_passkey(app, "My phone").await;
        browser.goto(&app.url("/account")).await;
        assert_eq!(browser.path().await, "/account");
        let stored = identity::find(&app.state.pool, &user.id)
            .await
            .expect("user");
        assert!(!stored.must_change_password);
        // The handed-out password no longer signs in: the passkey replaced it.
        assert_eq!(stored.password_hash, None);
        let client = crate::support::app::new_client();
        let csrf = app.login_csrf(&client).await;
        let refused = client
            .post(app.url("/login"))
            .form(&[
                ("email", "ada@example.com"),
                ("password", PASSWORD),
                ("csrf_token", csrf.as_str()),
            ])
            .send()
            .await
            .expect("post login");
        assert_eq!(refused.status(), 401);
    }
);

page_test!(
    an_admin_without_a_second_factor_learns_why_and_is_led_through_set_up_back_to_admin,
    Session::without_autofill(),
    default_config,
    |app, browser| {
        make_admin(app, "ada@example.com").await;
        submit_password(app, browser, "ada@example.com", "/account").await;
        browser.wait_for("location.pathname === '/account'").await;
        assert_eq!(
            browser
                .eval("!!document.querySelector('a[href=\"/admin\"]')")
                .await,
            true,
            "the account page links to Administration"
        );
        for width in WIDTHS {
            set_width(browser, width).await;
            browser.goto(&app.url("/admin")).await;
            assert_eq!(text(browser, "h1").await, "Two-step sign-in needed");
            assert!(text(browser, "#why").await.contains("second factor"));
            assert_eq!(text(browser, "header.bar .brand").await, "Latchkey");
            assert_fits(&overflow(browser).await, "/admin (why)", width);
        }
        browser.click("#set-up-mfa").await;
        browser
            .wait_for("location.pathname === '/account/mfa'")
            .await;
        browser
            .click("form[action='/account/mfa/totp/start'] button")
            .await;
        browser
            .wait_for("!!document.getElementById('totp-secret')")
            .await;
        let secret = base32_decode(&text(browser, "#totp-secret").await);
        let code = Totp::new(&secret).code_at(app.clock.now_secs() as u64);
        browser
            .eval(&format!(
                "document.getElementById('code').value = {code:?}; true"
            ))
            .await;
        browser
            .click("form[action='/account/mfa/totp/confirm'] button")
            .await;
        browser
            .wait_for("!!document.getElementById('mfa-continue')")
            .await;
        assert_eq!(text(browser, "#mfa-continue").await, "Continue");
        browser.click("#mfa-continue").await;
        browser.wait_for("location.pathname === '/admin'").await;
        // The factor exists now; this session still lacks it.
        browser
            .wait_for("!!document.getElementById('sign-in-again')")
            .await;
        browser.click("#sign-in-again").await;
        browser.wait_for("location.pathname === '/login'").await;
        browser
            .eval(&format!(
                "document.getElementById('email').value = 'ada@example.com'; \
                 document.getElementById('password').value = {PASSWORD:?}; true"
            ))
            .await;
        browser
            .click("form[action='/login'] button[type=submit]")
            .await;
        browser.wait_for("location.pathname === '/login/mfa'").await;
        // The enrolment code is spent; the next period's code signs in.
        app.clock.advance(30);
        let code = Totp::new(&secret).code_at(app.clock.now_secs() as u64);
        browser
            .eval(&format!(
                "document.getElementById('code').value = {code:?}; true"
            ))
            .await;
        browser
            .click("form[action='/login/mfa'] button[type=submit]")
            .await;
        browser.wait_for("location.pathname === '/admin'").await;
        browser.wait_for("!!document.getElementById('users')").await;
        assert!(text(browser, "#users").await.contains("ada@example.com"));
    }
);
