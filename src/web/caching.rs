//! What browsers and proxies may keep: static files under content-hashed names, cached for a year
//! (`immutable`), and public pages (the catalogue, a thread as a visitor sees it) with an `ETag`
//! that answers `304 Not Modified` to `If-None-Match`. Personal pages stay `no-store`
//! (`middleware::identify`).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse};
use actix_web::HttpRequest;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::sync::OnceLock;

use super::AppError;

/// A file under `/static/`, named by its content: a new build with a changed file gets a new
/// name, so the old one can be cached forever.
pub struct Asset {
    stem: &'static str,
    extension: &'static str,
    body: &'static str,
    content_type: &'static str,
    /// Its content's digest, worked out once.
    digest: OnceLock<String>,
    path: OnceLock<String>,
}

impl Asset {
    const fn new(stem: &'static str, extension: &'static str, body: &'static str, content_type: &'static str) -> Asset {
        Asset { stem, extension, body, content_type, digest: OnceLock::new(), path: OnceLock::new() }
    }

    fn digest(&self) -> &str {
        self.digest.get_or_init(|| {
            // The same on every server of one build: a page from one server names a file any
            // server has.
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            self.body.hash(&mut hasher);
            format!("{:012x}", hasher.finish() >> 16)
        })
    }

    /// Where pages link to it: `/static/app.<digest>.css`.
    pub fn path(&'static self) -> &'static str {
        self.path.get_or_init(|| format!("/static/{}.{}.{}", self.stem, self.digest(), self.extension))
    }
}

pub static CSS: Asset = Asset::new("app", "css", include_str!("../../static/app.css"), "text/css; charset=utf-8");
pub static JS: Asset = Asset::new("app", "js", include_str!("../../static/app.js"), "text/javascript; charset=utf-8");
static ASSETS: [&Asset; 2] = [&CSS, &JS];

/// A year: the longest `max-age` caches honour.
const FOREVER: &str = "public, max-age=31536000, immutable";

/// `/static/{file}`: `app.<digest>.css` is cached for a year. A name with another digest (a page
/// from a server of the previous build, during a rolling restart) still gets today's file, but
/// caches must ask again; the bare `app.css` likewise.
pub async fn static_file(path: web::Path<String>) -> Result<HttpResponse, AppError> {
    let (base, extension) = path.rsplit_once('.').ok_or(AppError::NotFound)?;
    let (stem, digest) = base.split_once('.').unwrap_or((base, ""));
    let asset = ASSETS.iter().find(|a| a.stem == stem && a.extension == extension).ok_or(AppError::NotFound)?;
    let cache = if digest == asset.digest() { FOREVER } else { "public, no-cache" };
    Ok(HttpResponse::Ok().content_type(asset.content_type).insert_header((header::CACHE_CONTROL, cache)).body(asset.body))
}

/// What a handler puts on a page that is the same for every visitor: caches may keep it, and must
/// ask (with its `ETag`) before showing it again.
pub const PUBLIC: &str = "public, no-cache";

/// Marks a page as public (see `PUBLIC`). For someone signed in, `identify` replaces it with
/// `no-store`.
pub fn public(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(PUBLIC));
    response
}

/// The entity tag of a page's bytes. Weak: the same page compressed differently is the same page.
pub fn etag_of(bytes: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("W/\"{:016x}\"", hasher.finish())
}

/// A public page kept whole, with each encoding made the first time a client asks for it: a page
/// every visitor gets alike is compressed once, not once per request. (Compressing the 200-comment
/// page per request with brotli took more CPU than serving it: `bench/results.md`.)
pub struct Precompressed {
    html: actix_web::web::Bytes,
    etag: String,
    /// Each encoding, made when first asked for (`None`: it could not be made; the page goes
    /// uncompressed).
    brotli: OnceLock<Option<actix_web::web::Bytes>>,
    zstd: OnceLock<Option<actix_web::web::Bytes>>,
    gzip: OnceLock<Option<actix_web::web::Bytes>>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Coding {
    Brotli,
    Zstd,
    Gzip,
    Identity,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
            Coding::Identity => "identity",
        }
    }

    /// The smallest encoding the client accepts (a q of 0 refuses one).
    fn chosen(accept_encoding: Option<&str>) -> Coding {
        let accepted = |name: &str| {
            accept_encoding.is_some_and(|header| {
                header.split(',').any(|item| {
                    let mut parts = item.split(';');
                    let coding = parts.next().unwrap_or("").trim();
                    let refused = parts.any(|p| p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()) == Some(0.0));
                    coding.eq_ignore_ascii_case(name) && !refused
                })
            })
        };
        [Coding::Brotli, Coding::Zstd, Coding::Gzip].into_iter().find(|c| accepted(c.name())).unwrap_or(Coding::Identity)
    }
}

impl Precompressed {
    pub fn new(html: String) -> Precompressed {
        let etag = etag_of(html.as_bytes());
        Precompressed { html: html.into(), etag, brotli: OnceLock::new(), zstd: OnceLock::new(), gzip: OnceLock::new() }
    }

    /// The page in `coding`, or `None` where it goes uncompressed.
    fn encoded(&self, coding: Coding) -> Option<actix_web::web::Bytes> {
        let html = &self.html[..];
        // Kept for an hour or more, so worth a slower, smaller setting than per-request
        // compression uses (brotli 3, zstd 3, gzip "fast").
        let (cell, make): (_, &dyn Fn() -> std::io::Result<Vec<u8>>) = match coding {
            Coding::Brotli => (&self.brotli, &|| {
                let mut out = Vec::with_capacity(html.len() / 8);
                brotli::CompressorWriter::new(&mut out, 32 * 1024, 7, 22).write_all(html)?;
                Ok(out)
            }),
            Coding::Zstd => (&self.zstd, &|| zstd::bulk::compress(html, 9)),
            Coding::Gzip => (&self.gzip, &|| {
                let mut writer = flate2::write::GzEncoder::new(Vec::with_capacity(html.len() / 6), flate2::Compression::best());
                writer.write_all(html)?;
                writer.finish()
            }),
            Coding::Identity => return None,
        };
        cell.get_or_init(|| make().ok().map(Into::into)).clone()
    }

    /// The page for this request: `304` if the client has it, else the bytes in the best
    /// encoding it accepts, marked public with their `ETag`.
    pub fn respond(&self, req: &HttpRequest) -> HttpResponse {
        if req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|asked| etag_matches(asked, &self.etag)) {
            return HttpResponse::NotModified().insert_header((header::ETAG, self.etag.as_str())).insert_header((header::CACHE_CONTROL, PUBLIC)).finish();
        }
        let chosen = Coding::chosen(req.headers().get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()));
        let (coding, body) = match self.encoded(chosen) {
            Some(bytes) => (chosen, bytes),
            None => (Coding::Identity, self.html.clone()),
        };
        let mut response = HttpResponse::Ok();
        response
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, PUBLIC))
            .insert_header((header::ETAG, self.etag.as_str()))
            .insert_header((header::VARY, "Accept-Encoding"));
        if coding != Coding::Identity {
            // Already encoded: actix-web's Compress leaves a response with this header alone.
            response.insert_header((header::CONTENT_ENCODING, coding.name()));
        }
        response.body(body)
    }
}

fn etag_matches(if_none_match: &str, tag: &str) -> bool {
    let bare = tag.trim_start_matches("W/");
    if_none_match.trim() == "*" || if_none_match.split(',').any(|candidate| candidate.trim().trim_start_matches("W/") == bare)
}

/// For a public page fetched with GET: its `ETag`, and `304` with no body when the browser
/// already has those bytes.
pub async fn conditional(req: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Result<ServiceResponse<BoxBody>, Error> {
    let asked = matches!(*req.method(), Method::GET | Method::HEAD);
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string);
    let response = next.call(req).await?.map_into_boxed_body();
    let public = response.headers().get(header::CACHE_CONTROL).is_some_and(|v| v == PUBLIC);
    // A page that came with its tag (`Precompressed`) has answered If-None-Match itself.
    if !asked || !public || response.status() != StatusCode::OK || response.headers().contains_key(header::ETAG) {
        return Ok(response);
    }
    let (request, response) = response.into_parts();
    let (mut head, body) = response.into_parts();
    let bytes = actix_web::body::to_bytes(body).await.map_err(|e| actix_web::error::ErrorInternalServerError(e.to_string()))?;
    let tag = etag_of(&bytes);
    head.headers_mut().insert(header::ETAG, HeaderValue::from_str(&tag).expect("hex is a valid header"));
    let response = if if_none_match.as_deref().is_some_and(|asked| etag_matches(asked, &tag)) {
        head.headers_mut().remove(header::CONTENT_TYPE);
        let mut not_modified = head.set_body(BoxBody::new(()));
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        not_modified
    } else {
        head.set_body(BoxBody::new(bytes))
    };
    Ok(ServiceResponse::new(request, response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entity_tag_matches_itself_weak_or_strong_and_in_a_list() {
        let tag = etag_of(b"page");
        assert!(etag_matches(&tag, &tag));
        assert!(etag_matches(&tag.replace("W/", ""), &tag));
        assert!(etag_matches(&format!("W/\"0000000000000000\", {tag}"), &tag));
        assert!(!etag_matches(&etag_of(b"another page"), &tag));
    }

    #[test]
    fn the_smallest_accepted_encoding_is_chosen_and_a_zero_q_refuses() {
        assert_eq!(Coding::chosen(Some("gzip, deflate, br, zstd")), Coding::Brotli);
        assert_eq!(Coding::chosen(Some("gzip, br;q=0, zstd")), Coding::Zstd);
        assert_eq!(Coding::chosen(Some("gzip")), Coding::Gzip);
        assert_eq!(Coding::chosen(Some("deflate")), Coding::Identity);
        assert_eq!(Coding::chosen(None), Coding::Identity);
    }

    #[test]
    fn an_asset_is_named_by_its_content() {
        assert!(CSS.path().starts_with("/static/app.") && CSS.path().ends_with(".css"), "{}", CSS.path());
        assert_ne!(CSS.path().trim_end_matches(".css"), JS.path().trim_end_matches(".js"), "different files, different digests");
    }
}
