//! What people write, as HTML: a small Markdown subset (paragraphs, headings, emphasis, code,
//! quotes, lists, links), parsed by pulldown-cmark and then cleaned by ammonia.
//!
//! Two walls, not one: raw HTML in the source is turned into text before rendering, so a `<b>`
//! someone typed shows as `<b>`; and whatever the renderer makes still goes through an allowlist
//! sanitizer, so no script, event handler, style or `javascript:` link can reach a page even if
//! the parser had a bug. Cached fragments hold only this sanitized output.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::OnceLock;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

fn sanitizer() -> &'static ammonia::Builder<'static> {
    static SANITIZER: OnceLock<ammonia::Builder<'static>> = OnceLock::new();
    SANITIZER.get_or_init(|| {
        let mut builder = ammonia::Builder::empty();
        builder
            .tags(HashSet::from(["p", "br", "em", "strong", "del", "code", "pre", "blockquote", "ul", "ol", "li", "a", "h3", "h4", "h5", "h6"]))
            .tag_attributes(std::collections::HashMap::from([("a", HashSet::from(["href"])), ("ol", HashSet::from(["start"]))]))
            .url_schemes(HashSet::from(["http", "https", "mailto"]))
            // Relative links (`/posts/2`) stay; anything with a scheme must be one of the above.
            .url_relative(ammonia::UrlRelative::PassThrough)
            // Links written by strangers: no ranking credit, no window.opener.
            .link_rel(Some("nofollow ugc noopener noreferrer"))
            .clean_content_tags(HashSet::from(["script", "style"]));
        builder
    })
}

/// The HTML to show for a stored body: as cooked when it was written, or cooked now for a row
/// without it (written before bodies were cooked, or cleared to be cooked again).
pub fn shown<'a>(cooked: Option<&'a str>, source: &str) -> Cow<'a, str> {
    cooked.map_or_else(|| Cow::Owned(to_html(source)), Cow::Borrowed)
}

/// A heading's level in a body: two below the page's own headings, at most h6.
fn below_page(level: pulldown_cmark::HeadingLevel) -> pulldown_cmark::HeadingLevel {
    use pulldown_cmark::HeadingLevel::*;
    match level {
        H1 => H3,
        H2 => H4,
        H3 => H5,
        _ => H6,
    }
}

/// The HTML for a comment or post body: safe to put in a page as it is.
pub fn to_html(source: &str) -> String {
    let parser = Parser::new_ext(source, Options::ENABLE_STRIKETHROUGH).map(|event| match event {
        // Typed HTML is shown, not obeyed.
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        // Headings render below the page's own (`#` is an h3 under the discussion's h1 and h2);
        // images are not part of the subset: an image shows its alt text (no tracking pixels in a
        // discussion; ammonia drops the tag).
        Event::Start(Tag::Heading { level, id, classes, attrs }) => Event::Start(Tag::Heading { level: below_page(level), id, classes, attrs }),
        Event::End(TagEnd::Heading(level)) => Event::End(TagEnd::Heading(below_page(level))),
        other => other,
    });
    let mut html = String::with_capacity(source.len() + source.len() / 2);
    pulldown_cmark::html::push_html(&mut html, parser);
    sanitizer().clean(&html).to_string()
}

#[cfg(test)]
mod tests {
    use super::to_html;

    #[test]
    fn the_subset_renders() {
        assert_eq!(to_html("*hi* **there** `x`"), "<p><em>hi</em> <strong>there</strong> <code>x</code></p>\n");
        assert_eq!(
            to_html("see [the docs](https://example.com/a?b=1)"),
            "<p>see <a href=\"https://example.com/a?b=1\" rel=\"nofollow ugc noopener noreferrer\">the docs</a></p>\n"
        );
        assert!(to_html("> quoted\n\n- one\n- two").contains("<blockquote>"));
        assert!(to_html("- one\n- two").contains("<li>one</li>"));
        assert_eq!(to_html("# Title\n\n## Part"), "<h3>Title</h3>\n<h4>Part</h4>\n", "headings, below the page's own");
        assert_eq!(to_html("###### deep"), "<h6>deep</h6>\n");
    }

    #[test]
    fn nothing_hostile_survives() {
        let hostile = [
            "<script>alert(1)</script>",
            "[click](javascript:alert(1))",
            "[click](JaVaScRiPt:alert(1))",
            "<img src=x onerror=alert(1)>",
            "<a href=\"#\" onclick=\"alert(1)\">x</a>",
            "![x](https://tracker.example/p.gif)",
            "<iframe src=//evil></iframe>",
            "[x](data:text/html;base64,PHNjcmlwdD4=)",
        ];
        for source in hostile {
            let html = to_html(source).to_lowercase();
            // Typed text is escaped, so every `<` in the output opens a tag the renderer made.
            for tag in html.split('<').skip(1).map(|t| &t[..t.find('>').unwrap_or(t.len())]) {
                let name = tag.trim_start_matches('/').split_whitespace().next().unwrap_or("");
                assert!(["p", "a", "em", "strong"].contains(&name), "{source:?} gave <{tag}>");
                for bad in ["javascript:", "onerror", "onclick", "data:", "src="] {
                    assert!(!tag.contains(bad), "{source:?} gave <{tag}>");
                }
            }
        }
        // Typed tags are shown as text.
        assert_eq!(to_html("<b>bold?</b>"), "<p>&lt;b&gt;bold?&lt;/b&gt;</p>\n");
    }
}
