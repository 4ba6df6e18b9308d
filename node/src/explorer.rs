//! The live web explorer: `GET /` on the RPC port answers one HTML page, embedded in the binary,
//! that watches the chain through the node's own public JSON-RPC (docs/explorer.md says what
//! each view shows and where its numbers come from).
//!
//! Contract:
//! - The page is the three files under `node/explorer/` (`index.html`, `explorer.css`,
//!   `explorer.js`), put together once into one document: the style sheet and the script are
//!   written inline, so a browser needs one request and nothing outside the node. No CDN, no
//!   font or script from elsewhere, no build step but `include_str!`.
//! - The page is read-only. Its script POSTs JSON-RPC to the origin it came from and calls only
//!   public methods (`status`, `get_header`, `get_block`, `get_election`, `get_peers`,
//!   `get_mempool`, `get_tx`, `get_account`, `get_history`), never an admin one; so it sees
//!   exactly what any client sees, with the same limits and the same busy answers.
//! - The answer carries a Content-Security-Policy that allows only that: the inline style and
//!   script, `connect-src 'self'`, images from `data:` (the icon), no frames, no forms, no other
//!   origin. Every value the script shows is written as text (`textContent`), never as HTML, so a
//!   validator name in the genesis file cannot inject markup.

use jsonrpsee::server::{HttpBody, HttpResponse};
use std::sync::LazyLock;

/// The page's markup: the two placeholders below are replaced by the style sheet and the script.
const INDEX_HTML: &str = include_str!("../explorer/index.html");
const EXPLORER_CSS: &str = include_str!("../explorer/explorer.css");
const EXPLORER_JS: &str = include_str!("../explorer/explorer.js");
const STYLE_PLACEHOLDER: &str = "/* explorer.css */";
const SCRIPT_PLACEHOLDER: &str = "/* explorer.js */";

/// What the browser may load and where it may connect: the inline style and script of this one
/// page, JSON-RPC to its own origin, the inline icon; nothing else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

/// The whole page, put together on first use.
static PAGE: LazyLock<String> = LazyLock::new(|| assemble(INDEX_HTML, EXPLORER_CSS, EXPLORER_JS));

/// The markup with the style sheet and the script written in at their placeholders.
fn assemble(index_html: &str, style: &str, script: &str) -> String {
    // Each placeholder is in the markup exactly once (the test below checks the real files), and
    // neither asset holds the text that would end its element early.
    assert!(!style.contains("</style"), "explorer.css must not close its <style> element");
    assert!(!script.contains("</script"), "explorer.js must not close its <script> element");
    index_html.replacen(STYLE_PLACEHOLDER, style, 1).replacen(SCRIPT_PLACEHOLDER, script, 1)
}

/// The answer to `GET /`: the explorer page.
pub fn page() -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::from(PAGE.as_str()));
    let headers = response.headers_mut();
    let header = hyper::header::HeaderValue::from_static;
    headers.insert(hyper::header::CONTENT_TYPE, header("text/html; charset=utf-8"));
    // A node upgraded in place serves its own page at the next load, never a cached older one.
    headers.insert(hyper::header::CACHE_CONTROL, header("no-cache"));
    headers.insert(hyper::header::CONTENT_SECURITY_POLICY, header(CONTENT_SECURITY_POLICY));
    headers.insert(hyper::header::X_CONTENT_TYPE_OPTIONS, header("nosniff"));
    headers.insert(hyper::header::REFERRER_POLICY, header("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_placeholder_appears_once_in_the_markup_and_the_page_holds_both_assets() {
        assert_eq!(INDEX_HTML.matches(STYLE_PLACEHOLDER).count(), 1);
        assert_eq!(INDEX_HTML.matches(SCRIPT_PLACEHOLDER).count(), 1);
        let page = PAGE.as_str();
        assert!(!page.contains(STYLE_PLACEHOLDER) && !page.contains(SCRIPT_PLACEHOLDER));
        assert!(page.contains(EXPLORER_CSS.trim()));
        assert!(page.contains(EXPLORER_JS.trim()));
    }

    #[test]
    fn the_page_loads_nothing_from_another_origin() {
        let page = PAGE.as_str();
        for outside in ["http://", "https://", "//cdn", "src=\"/", "href=\"/"] {
            assert!(!page.contains(outside), "the page must work offline, but it names {outside:?}");
        }
    }

    #[test]
    fn the_page_never_calls_an_admin_method() {
        for method in tinychain_rpc::Method::ALL.iter().filter(|method| method.is_admin()) {
            assert!(!EXPLORER_JS.contains(method.as_str()), "explorer.js names the admin method {}", method.as_str());
        }
    }

    #[test]
    fn the_answer_is_html_with_the_security_policy() {
        let response = page();
        let headers = response.headers();
        assert_eq!(headers[hyper::header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[hyper::header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
    }

    #[test]
    #[should_panic(expected = "must not close its <script> element")]
    fn a_script_that_would_close_its_element_is_refused() {
        assemble("<script>/* explorer.js */</script>", "", "let text = '</script>';");
    }
}
