//! Headless Chromium (Debian's `/usr/bin/chromium`) driven over the DevTools
//! protocol, with a virtual WebAuthn authenticator in its one tab.

use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::web_authn::{
    AddVirtualAuthenticatorParams, AuthenticatorId, AuthenticatorProtocol, AuthenticatorTransport,
    EnableParams, GetCredentialsParams, SetResponseOverrideBitsParams, VirtualAuthenticatorOptions,
};
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use chromiumoxide::Page;
use futures_util::StreamExt as _;
use serde_json::Value;

use super::app::TestApp;
use super::PASSWORD;

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

/// `None` (skip) without Chromium, unless browser tests are required.
pub(crate) fn chromium_available() -> bool {
    if std::path::Path::new(CHROMIUM).exists() {
        return true;
    }
    if std::env::var("LATCHKEY_TEST_BROWSER").is_ok_and(|v| v == "1") {
        panic!("LATCHKEY_TEST_BROWSER=1 but {CHROMIUM} is missing: install the `chromium` package");
    }
    eprintln!("skipping: {CHROMIUM} not found (browser tests run when Chromium is installed)");
    false
}

/// A headless Chromium with one tab and a virtual authenticator in it.
pub(crate) struct Session {
    pub(crate) browser: Browser,
    pub(crate) page: Page,
    pub(crate) authenticator: AuthenticatorId,
    pub(crate) _profile: tempfile::TempDir,
    pub(crate) _events: tokio::task::JoinHandle<()>,
}

/// Makes the browser report no conditional mediation (passkey autofill), as
/// browsers without it do. Chromium's virtual environment answers a
/// conditional request at once with the first matching credential, which
/// would sign in before a test can click anything.
pub(crate) const WITHOUT_AUTOFILL: &str = "Object.defineProperty(PublicKeyCredential, 'isConditionalMediationAvailable', { value: () => Promise.resolve(false) });";

impl Session {
    /// A browser with passkey autofill (conditional mediation) as Chromium has it.
    pub(crate) async fn with_autofill() -> Session {
        Self::start(&[]).await
    }

    /// A browser without passkey autofill: only the button signs in with a passkey.
    pub(crate) async fn without_autofill() -> Session {
        Self::start(&[WITHOUT_AUTOFILL]).await
    }

    /// A browser whose pages first run `init_scripts` (before any page script).
    pub(crate) async fn start(init_scripts: &[&str]) -> Session {
        let profile = tempfile::tempdir().expect("profile dir");
        let config = BrowserConfig::builder()
            .chrome_executable(CHROMIUM)
            .disable_default_args()
            .no_sandbox()
            .user_data_dir(profile.path())
            .args([
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--password-store=basic",
                "--host-resolver-rules=MAP localhost 127.0.0.1",
            ])
            .launch_timeout(Duration::from_secs(30))
            .request_timeout(Duration::from_secs(30))
            .build()
            .expect("browser config");
        let (browser, mut handler) = Browser::launch(config).await.expect("launch Chromium");
        let events = tokio::spawn(async move {
            // Keep the connection pumping; events chromiumoxide does not know are harmless.
            while handler.next().await.is_some() {}
        });
        let page = browser.new_page("about:blank").await.expect("tab");
        for script in init_scripts {
            page.evaluate_on_new_document(*script)
                .await
                .expect("init script");
        }
        page.execute(EnableParams::default())
            .await
            .expect("WebAuthn.enable");
        let options = VirtualAuthenticatorOptions::builder()
            .protocol(AuthenticatorProtocol::Ctap2)
            .transport(AuthenticatorTransport::Internal)
            .has_resident_key(true)
            .has_user_verification(true)
            .is_user_verified(true)
            .automatic_presence_simulation(true)
            .build()
            .expect("authenticator options");
        let authenticator = page
            .execute(AddVirtualAuthenticatorParams::new(options))
            .await
            .expect("WebAuthn.addVirtualAuthenticator")
            .result
            .authenticator_id;
        Session {
            browser,
            page,
            authenticator,
            _profile: profile,
            _events: events,
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its JSON value.
    pub(crate) async fn eval(&self, expression: &str) -> Value {
        let params = EvaluateParams::builder()
            .expression(expression)
            .await_promise(true)
            .return_by_value(true)
            .build()
            .expect("evaluate params");
        let result = self
            .page
            .evaluate_expression(params)
            .await
            .unwrap_or_else(|e| panic!("evaluating {expression}: {e}"));
        result.value().cloned().unwrap_or(Value::Null)
    }

    /// Navigates and waits for the new document (never the old one, still complete).
    pub(crate) async fn goto(&self, url: &str) {
        self.eval("window.__leaving = true").await;
        self.page.goto(url).await.expect("navigate");
        self.wait_for("!window.__leaving && document.readyState === 'complete'")
            .await;
    }

    /// Waits (up to 15 s) until `condition` is true in the page. Survives navigations.
    pub(crate) async fn wait_for(&self, condition: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let probe = format!(
            "(() => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }})()"
        );
        loop {
            let params = EvaluateParams::builder()
                .expression(probe.clone())
                .return_by_value(true)
                .build()
                .expect("evaluate params");
            if let Ok(result) = self.page.evaluate_expression(params).await {
                if result.value() == Some(&Value::Bool(true)) {
                    return;
                }
            }
            if tokio::time::Instant::now() > deadline {
                let url = self.eval("location.href").await;
                let text = self
                    .eval("document.body ? document.body.innerText : ''")
                    .await;
                panic!("timed out waiting for `{condition}` on {url}; page text:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn click(&self, selector: &str) {
        self.wait_for(&format!(
            "document.querySelector({0:?}) && !document.querySelector({0:?}).hidden",
            selector
        ))
        .await;
        self.page
            .find_element(selector)
            .await
            .unwrap_or_else(|e| panic!("{selector}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {selector}: {e}"));
    }

    pub(crate) async fn path(&self) -> String {
        self.eval("location.pathname + location.search")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Signs in through the real password form.
    pub(crate) async fn sign_in_with_password(&self, app: &TestApp, email: &str) {
        self.goto(&app.url("/login")).await;
        self.eval(&format!(
            "document.getElementById('email').value = {email:?}; \
             document.getElementById('password').value = {PASSWORD:?}; true"
        ))
        .await;
        self.click("form[action='/login'] button[type=submit]")
            .await;
        self.wait_for("location.pathname === '/account'").await;
    }

    /// Gives the password on the real form and waits for the second step.
    pub(crate) async fn password_then_second_step(&self, app: &TestApp, email: &str) {
        self.goto(&app.url("/login")).await;
        self.eval(&format!(
            "document.getElementById('email').value = {email:?}; \
             document.getElementById('password').value = {PASSWORD:?}; true"
        ))
        .await;
        self.click("form[action='/login'] button[type=submit]")
            .await;
        self.wait_for("location.pathname === '/login/mfa'").await;
    }

    pub(crate) async fn sign_out(&self) {
        self.click("header form[action='/logout'] button").await;
        self.wait_for("location.pathname === '/login'").await;
    }

    /// Adds a passkey from the account page with the real button.
    pub(crate) async fn add_passkey(&self, app: &TestApp, name: &str) {
        self.goto(&app.url("/account/passkeys")).await;
        self.eval(&format!(
            "document.getElementById('passkey-name').value = {name:?}; true"
        ))
        .await;
        self.click("#add-passkey").await;
        self.wait_for(&format!(
            "location.pathname === '/account/passkeys' && [...document.querySelectorAll('#passkeys .passkey-name')].some(td => td.textContent === {name:?})"
        ))
        .await;
    }

    /// The signed-in account as JSON, fetched by the page with its cookies.
    pub(crate) async fn account(&self) -> Value {
        self.eval(
            "fetch('/account', { headers: { Accept: 'application/json' } }).then(r => r.status === 200 ? r.json() : { status: r.status })",
        )
        .await
    }

    pub(crate) async fn status_text(&self) -> String {
        self.eval("document.getElementById('passkey-status').textContent")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub(crate) async fn override_bits(&self, bogus_signature: bool, bad_uv: bool, bad_up: bool) {
        let mut params = SetResponseOverrideBitsParams::new(self.authenticator.clone());
        params.is_bogus_signature = Some(bogus_signature);
        params.is_bad_uv = Some(bad_uv);
        params.is_bad_up = Some(bad_up);
        self.page
            .execute(params)
            .await
            .expect("WebAuthn.setResponseOverrideBits");
    }

    pub(crate) async fn resident_credentials(&self) -> usize {
        self.page
            .execute(GetCredentialsParams::new(self.authenticator.clone()))
            .await
            .expect("WebAuthn.getCredentials")
            .result
            .credentials
            .iter()
            .filter(|c| c.is_resident_credential)
            .count()
    }

    pub(crate) async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
    }
}
