//! Identity: pre-shared keys → an identity with labels.

/// Who is calling: `psk:<key_id>` (or `api_key:<key_id>`) with the key's labels, or
/// `anonymous` with none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub principal: String,
    pub labels: Vec<String>,
}

impl Identity {
    pub fn anonymous() -> Identity {
        Identity { principal: "anonymous".to_owned(), labels: Vec::new() }
    }
}
