//! The attributes every Latchkey cookie shares: `Path=/`, `HttpOnly`,
//! `SameSite=Lax`, and `Secure` when the issuer is https (the cookie names
//! then carry the `__Host-` prefix, chosen by each cookie's name function).

use axum_extra::extract::cookie::{Cookie, SameSite};

pub fn build(name: &'static str, value: String, https: bool) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .secure(https)
        .same_site(SameSite::Lax)
        .build()
}

/// A cookie that deletes `name` in the browser.
pub fn removal(name: &'static str, https: bool) -> Cookie<'static> {
    let mut cookie = build(name, String::new(), https);
    cookie.make_removal();
    cookie
}
