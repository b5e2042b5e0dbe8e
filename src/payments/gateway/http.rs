//! A client for a Stripe-like charges API: `POST /v1/charges` with an `Idempotency-Key` header,
//! `GET /v1/charges?idempotency_key=…` to find a charge whose answer was lost.

use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

use super::{Charge, ChargeRequest, DeclineCode, GatewayError, GatewayFuture, GatewayRefund, PaymentGateway, RefundRequest};

pub struct HttpGateway {
    client: reqwest::Client,
    base_url: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: Option<String>,
}

#[derive(Deserialize)]
struct List<T> {
    data: Vec<T>,
}

impl HttpGateway {
    pub fn new(base_url: &str, timeout: Duration) -> HttpGateway {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            // Many charges in flight to one host: keep plenty of connections warm.
            .pool_max_idle_per_host(1024)
            .build()
            .expect("an HTTP client with these settings");
        HttpGateway { client, base_url: base_url.trim_end_matches('/').to_string() }
    }

    /// What a failed exchange means for the money: only "never sent" and a refusal are certain.
    fn transport(error: reqwest::Error) -> GatewayError {
        if error.is_connect() {
            // Never connected: the request did not reach the gateway.
            GatewayError::Unavailable(error.to_string())
        } else if error.is_timeout() {
            GatewayError::Timeout
        } else {
            // Sent, then the exchange broke (a reset, a cut body): the charge may have happened.
            GatewayError::Ambiguous(error.to_string())
        }
    }

    async fn refusal(response: reqwest::Response) -> GatewayError {
        let status = response.status().as_u16();
        let detail = response.json::<ErrorBody>().await.ok().map(|b| b.error);
        match status {
            402 | 400 | 422 => {
                let (code, message) = match detail {
                    Some(d) => (DeclineCode::parse(&d.code), d.message),
                    None => (DeclineCode::CardDeclined, None),
                };
                let message = message.unwrap_or_else(|| code.default_message().to_string());
                GatewayError::Declined { code, message }
            }
            408 | 504 => GatewayError::Timeout,
            // Refused before any work was done: nothing was charged.
            429 | 503 => GatewayError::Unavailable(format!("HTTP {status}")),
            // Failed while handling a request it had received: it may have charged.
            _ => GatewayError::Ambiguous(format!("HTTP {status}")),
        }
    }
}

impl PaymentGateway for HttpGateway {
    fn charge(self: Arc<Self>, request: ChargeRequest) -> GatewayFuture<Charge> {
        Box::pin(async move {
            let body = serde_json::json!({
                "amount": request.money.major(),
                "currency": request.money.currency().code(),
                "payment_method": request.payment_method,
            });
            self.post("/v1/charges", &request.idempotency_key, body).await
        })
    }

    fn lookup(self: Arc<Self>, idempotency_key: String) -> GatewayFuture<Option<Charge>> {
        Box::pin(async move {
            let found: Vec<Charge> = self.find("/v1/charges", &idempotency_key).await?;
            Ok(found.into_iter().find(|c| c.idempotency_key == idempotency_key))
        })
    }

    fn refund(self: Arc<Self>, request: RefundRequest) -> GatewayFuture<GatewayRefund> {
        Box::pin(async move {
            let body = serde_json::json!({
                "charge": request.charge_id,
                "amount": request.money.major(),
                "currency": request.money.currency().code(),
            });
            self.post("/v1/refunds", &request.idempotency_key, body).await
        })
    }

    fn lookup_refund(self: Arc<Self>, idempotency_key: String) -> GatewayFuture<Option<GatewayRefund>> {
        Box::pin(async move {
            let found: Vec<GatewayRefund> = self.find("/v1/refunds", &idempotency_key).await?;
            Ok(found.into_iter().find(|r| r.idempotency_key == idempotency_key))
        })
    }
}

impl HttpGateway {
    /// Creates something under an idempotency key; an answer that cannot be read may still
    /// report that it was made.
    async fn post<T: serde::de::DeserializeOwned>(&self, path: &str, key: &str, body: serde_json::Value) -> Result<T, GatewayError> {
        let response = self
            .client
            .post(format!("{}{path}", self.base_url))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .map_err(HttpGateway::transport)?;
        if !response.status().is_success() {
            return Err(HttpGateway::refusal(response).await);
        }
        response.json::<T>().await.map_err(|e| GatewayError::Ambiguous(format!("unreadable answer: {e}")))
    }

    /// What was made under an idempotency key (a lookup changes nothing, so an unreadable answer
    /// is simply no answer).
    async fn find<T: serde::de::DeserializeOwned>(&self, path: &str, key: &str) -> Result<Vec<T>, GatewayError> {
        let response = self
            .client
            .get(format!("{}{path}", self.base_url))
            .query(&[("idempotency_key", key)])
            .send()
            .await
            .map_err(HttpGateway::transport)?;
        if !response.status().is_success() {
            return Err(HttpGateway::refusal(response).await);
        }
        let list: List<T> = response.json().await.map_err(|e| GatewayError::Unavailable(format!("bad answer: {e}")))?;
        Ok(list.data)
    }
}
