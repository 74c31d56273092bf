//! User interface: HTML templates (minijinja, auto-escaped) and static assets,
//! compiled into the binary.
//!
//! Must not: decide anything. Templates receive plain values computed by
//! handlers; no inline scripts or styles (the CSP forbids them).

use minijinja::Environment;

pub struct Templates {
    env: Environment<'static>,
}

pub const STYLESHEET: &str = include_str!("static/latchkey.css");

/// The stylesheet with the deployment's primary colour (`ui.primary_color`,
/// validated as `#rrggbb`) as the accent.
pub fn stylesheet(ui: &crate::config::UiConfig) -> String {
    format!(
        "{STYLESHEET}\n:root {{ --accent: {}; }}\n",
        ui.primary_color
    )
}
pub const FORM_POST_SCRIPT: &str = include_str!("static/form_post.js");
pub const PASSKEYS_SCRIPT: &str = include_str!("static/passkeys.js");

impl Templates {
    /// The templates with the default branding.
    pub fn new() -> Templates {
        Templates::branded(&crate::config::UiConfig::default())
    }

    /// The templates with the deployment's `[ui]` branding: every page sees
    /// `product_name` and `logo_url`.
    pub fn branded(ui: &crate::config::UiConfig) -> Templates {
        let mut env = Environment::new();
        env.add_global("product_name", ui.product_name.trim().to_owned());
        env.add_global("logo_url", ui.logo_url.clone());
        // `.html` templates are auto-escaped by minijinja's default callback.
        for (name, source) in [
            ("base.html", include_str!("templates/base.html")),
            ("login.html", include_str!("templates/login.html")),
            ("account.html", include_str!("templates/account.html")),
            ("admin.html", include_str!("templates/admin.html")),
            ("consent.html", include_str!("templates/consent.html")),
            ("form_post.html", include_str!("templates/form_post.html")),
            ("logout.html", include_str!("templates/logout.html")),
            ("device.html", include_str!("templates/device.html")),
            ("passkeys.html", include_str!("templates/passkeys.html")),
            ("mfa_login.html", include_str!("templates/mfa_login.html")),
            ("password.html", include_str!("templates/password.html")),
            (
                "second_factor_needed.html",
                include_str!("templates/second_factor_needed.html"),
            ),
            ("error.html", include_str!("templates/error.html")),
            (
                "federation_link.html",
                include_str!("templates/federation_link.html"),
            ),
            ("identities.html", include_str!("templates/identities.html")),
            (
                "mfa_account.html",
                include_str!("templates/mfa_account.html"),
            ),
        ] {
            // The templates are part of the binary; a syntax error is a build bug.
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("template {name}: {e}"));
        }
        Templates { env }
    }

    pub fn render(
        &self,
        name: &str,
        context: minijinja::Value,
    ) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(context)
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_escape_user_input() {
        let t = Templates::new();
        let html = t
            .render("login.html", minijinja::context! { csrf_token => "t", next => "/", email => "<script>x</script>", error => "" })
            .expect("render");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>x"), "{html}");
        assert!(html.contains("autocomplete=\"current-password\""));
    }

    #[test]
    fn branding_reaches_every_page_escaped() {
        let ui = crate::config::UiConfig {
            product_name: "Acme <ID>".into(),
            logo_url: "https://cdn.example.com/logo.svg".into(),
            primary_color: "#0b6e4f".into(),
        };
        let html = Templates::branded(&ui)
            .render(
                "login.html",
                minijinja::context! { csrf_token => "t", next => "/", email => "", error => "" },
            )
            .expect("render");
        assert!(
            html.contains("Acme &lt;ID&gt;</a>") || html.contains("Acme &lt;ID&gt;</span>"),
            "{html}"
        );
        assert!(
            html.contains("<title>Sign in · Acme &lt;ID&gt;</title>"),
            "{html}"
        );
        // minijinja escapes `/` in HTML as `&#x2f;`, which browsers decode.
        assert!(
            html.contains(
                "<img class=\"logo\" src=\"https:&#x2f;&#x2f;cdn.example.com&#x2f;logo.svg\""
            ),
            "{html}"
        );
        assert!(stylesheet(&ui).ends_with(":root { --accent: #0b6e4f; }\n"));
    }
}
