//! A signed-in shopper with a browser-like client and the CSRF token its forms carry.

use super::fixtures::{self, PASSWORD};
use super::http::{Client, Resp};
use super::TestApp;

pub struct Shopper {
    pub client: Client,
    pub user_id: i64,
    pub token: String,
}

pub fn shopper(app: &TestApp, email: &str) -> Shopper {
    let user_id = fixtures::user(&mut app.conn(), email);
    let client = Client::new(&app.url);
    client.sign_in(email, PASSWORD);
    let token = client.csrf_token();
    Shopper { client, user_id, token }
}

impl Shopper {
    pub fn pay(&self, order_id: i64) -> Resp {
        self.client.post_form(&format!("/orders/{order_id}/pay"), &[("csrf_token", &self.token)])
    }
}
