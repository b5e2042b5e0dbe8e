//! A client for a Stripe-like charges API: `POST /v1/charges` with an `Idempotency-Key` header,
//! `GET /v1/charges?idempotency_key=…` to find a charge whose answer was lost.

use serde::Deserialize;
use std::time::Duration;

use super::gateway::{Charge, ChargeRequest, DeclineCode, GatewayError, PaymentGateway};

pub struct HttpGateway {
    agent: ureq::Agent,
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
struct ChargeList {
    data: Vec<Charge>,
}

impl HttpGateway {
    pub fn new(base_url: &str, timeout: Duration) -> HttpGateway {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeout.min(Duration::from_secs(2)))
            .timeout(timeout)
            .redirects(0)
            .build();
        HttpGateway { agent, base_url: base_url.trim_end_matches('/').to_string() }
    }

    fn classify(error: ureq::Error) -> GatewayError {
        match error {
            ureq::Error::Status(status, response) => {
                let detail = response.into_json::<ErrorBody>().ok().map(|b| b.error);
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
            ureq::Error::Transport(t) => match t.kind() {
                // Never connected: the request did not reach the gateway.
                ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => GatewayError::Unavailable(t.to_string()),
                // Sent, and then no answer (a timeout, a reset): the charge may have happened.
                ureq::ErrorKind::Io => GatewayError::Timeout,
                _ => GatewayError::Ambiguous(t.to_string()),
            },
        }
    }
}

impl PaymentGateway for HttpGateway {
    fn charge(&self, request: &ChargeRequest<'_>) -> Result<Charge, GatewayError> {
        let body = serde_json::json!({ "amount": request.amount.to_string(), "currency": request.currency });
        let response = self
            .agent
            .post(&format!("{}/v1/charges", self.base_url))
            .set("Idempotency-Key", request.idempotency_key)
            .send_json(body)
            .map_err(HttpGateway::classify)?;
        // An answer we cannot read may still report a charge.
        response.into_json::<Charge>().map_err(|e| GatewayError::Ambiguous(format!("unreadable answer: {e}")))
    }

    fn lookup(&self, idempotency_key: &str) -> Result<Option<Charge>, GatewayError> {
        let response = self
            .agent
            .get(&format!("{}/v1/charges", self.base_url))
            .query("idempotency_key", idempotency_key)
            .call()
            .map_err(HttpGateway::classify)?;
        let list: ChargeList =
            response.into_json().map_err(|e| GatewayError::Unavailable(format!("bad answer: {e}")))?;
        Ok(list.data.into_iter().find(|c| c.idempotency_key == idempotency_key))
    }
}
