//! The about page: what the console is, and the licences of what it embeds.

use askama::Template;
use axum::response::Response;

use super::super::{html, Ctx, Failure};

#[derive(Template)]
#[template(path = "console/about.html")]
pub struct AboutPage<'a> {
    pub c: &'a Ctx,
    pub version: &'a str,
    /// GNU Unifont's notice in the reader's language, and its licence text.
    pub font_notice: &'a str,
    pub font_licence: &'a str,
}

pub async fn page(c: Ctx) -> Result<Response, Failure> {
    c.require(crate::api::ANY)?;
    Ok(html(&AboutPage {
        c: &c,
        version: env!("CARGO_PKG_VERSION"),
        font_notice: match c.lang {
            crate::console::i18n::Lang::En => crate::core::led::FONT_NOTICE_EN,
            _ => crate::core::led::FONT_NOTICE_ZH,
        },
        font_licence: crate::core::led::FONT_LICENCE,
    }))
}
