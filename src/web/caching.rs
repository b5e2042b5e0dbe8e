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
use std::sync::{LazyLock, OnceLock};

use super::AppError;

/// A file under `/static/`, named by its content: a new build with a changed file gets a new
/// name, so the old one can be cached forever.
pub struct Asset {
    stem: &'static str,
    extension: &'static str,
    body: &'static str,
    content_type: &'static str,
}

impl Asset {
    const fn new(stem: &'static str, extension: &'static str, body: &'static str, content_type: &'static str) -> Asset {
        Asset { stem, extension, body, content_type }
    }

    fn digest(&self) -> String {
        // The same on every server of one build: a page from one server names a file any server
        // has.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.body.hash(&mut hasher);
        format!("{:012x}", hasher.finish() >> 16)
    }

    /// Where pages link to it: `/static/app.<digest>.css`.
    pub fn path(&self) -> &'static str {
        &PATHS[self.index()]
    }

    fn index(&self) -> usize {
        ASSETS.iter().position(|a| std::ptr::eq(*a, self)).expect("a listed asset")
    }
}

pub static CSS: Asset = Asset::new("app", "css", include_str!("../../static/app.css"), "text/css; charset=utf-8");
pub static JS: Asset = Asset::new("app", "js", include_str!("../../static/app.js"), "text/javascript; charset=utf-8");
static ASSETS: [&Asset; 2] = [&CSS, &JS];
static PATHS: LazyLock<Vec<String>> = LazyLock::new(|| ASSETS.iter().map(|a| format!("/static/{}.{}.{}", a.stem, a.digest(), a.extension)).collect());

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
    brotli: OnceLock<actix_web::web::Bytes>,
    zstd: OnceLock<actix_web::web::Bytes>,
    gzip: OnceLock<actix_web::web::Bytes>,
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

    fn bytes(&self, coding: Coding) -> actix_web::web::Bytes {
        let html = &self.html[..];
        let made = |cell: &OnceLock<actix_web::web::Bytes>, make: &dyn Fn() -> std::io::Result<Vec<u8>>| -> Option<actix_web::web::Bytes> {
            if let Some(done) = cell.get() {
                return Some(done.clone());
            }
            let bytes: actix_web::web::Bytes = make().ok()?.into();
            Some(cell.get_or_init(|| bytes).clone())
        };
        let compressed = match coding {
            // Kept for an hour or more, so worth a slower, smaller setting than per-request
            // compression uses (brotli 3, zstd 3, gzip "fast").
            Coding::Brotli => made(&self.brotli, &|| {
                let mut out = Vec::with_capacity(html.len() / 8);
                {
                    let mut writer = brotli::CompressorWriter::new(&mut out, 32 * 1024, 7, 22);
                    writer.write_all(html)?;
                }
                Ok(out)
            }),
            Coding::Zstd => made(&self.zstd, &|| zstd::bulk::compress(html, 9)),
            Coding::Gzip => made(&self.gzip, &|| {
                let mut writer = flate2::write::GzEncoder::new(Vec::with_capacity(html.len() / 6), flate2::Compression::best());
                writer.write_all(html)?;
                writer.finish()
            }),
            Coding::Identity => None,
        };
        compressed.unwrap_or_else(|| self.html.clone())
    }

    /// The page for this request: `304` if the client has it, else the bytes in the best
    /// encoding it accepts, marked public with their `ETag`.
    pub fn respond(&self, req: &HttpRequest) -> HttpResponse {
        if req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|asked| matches(asked, &self.etag)) {
            return HttpResponse::NotModified().insert_header((header::ETAG, self.etag.as_str())).insert_header((header::CACHE_CONTROL, PUBLIC)).finish();
        }
        let mut coding = Coding::chosen(req.headers().get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()));
        let body = self.bytes(coding);
        if body.len() == self.html.len() {
            coding = Coding::Identity; // it could not be compressed
        }
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

fn matches(if_none_match: &str, tag: &str) -> bool {
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
    let response = if if_none_match.as_deref().is_some_and(|asked| matches(asked, &tag)) {
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
        assert!(matches(&tag, &tag));
        assert!(matches(&tag.replace("W/", ""), &tag));
        assert!(matches(&format!("W/\"0000000000000000\", {tag}"), &tag));
        assert!(!matches(&etag_of(b"another page"), &tag));
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
