//! Reading requests: JSON bodies and path parameters whose rejections use
//! the API's error shape, the caller ([`Principal`]) from its bearer token,
//! role checks, and the `?limit=&cursor=` pagination of lists.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiError, ApiResult};

use crate::Core;
use crate::identity::Principal;

/// JSON body extractor whose rejections use the API's error shape.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// Reads a JSON body (already parsed) as `T`: the top level must be an
/// object, `25.0` counts as the integer 25 (as in JSON Schema), and an
/// error names where in the body it is.
pub(crate) fn from_json_value<T: serde::de::DeserializeOwned>(mut v: Value) -> ApiResult<T> {
    if !v.is_object() {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    }
    integral_floats(&mut v);
    serde_path_to_error::deserialize(v).map_err(|e| match e.path().to_string().as_str() {
        "." => ApiError::invalid(format!("the request body is invalid: {}", e.inner())),
        path => ApiError::invalid(format!(
            "the request body is invalid at `{path}`: {}",
            e.inner()
        )),
    })
}

/// A body serde_json could not read: `400 malformed_json`, or, when it is
/// well-formed but nested too deep, `422` as for definitions.
fn unreadable_json(why: &str) -> ApiError {
    if why.contains("recursion limit") {
        ApiError::invalid("the body nests deeper than 128 levels")
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {why}"),
        )
    }
}

/// [`from_json_value`] from bytes; `None` when the body is empty or `null`.
pub(crate) fn optional_json_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> ApiResult<Option<T>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| unreadable_json(&e.to_string()))?;
    if v.is_null() {
        return Ok(None);
    }
    from_json_value(v).map(Some)
}

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<Value>::from_request(req, state).await {
            Ok(Json(v)) => from_json_value(v).map(ApiJson),
            Err(rejection) => Err(match rejection {
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as JSON with `Content-Type: application/json`",
                ),
                JsonRejection::JsonSyntaxError(e) => unreadable_json(&e.body_text()),
                JsonRejection::JsonDataError(e) => ApiError::invalid(e.body_text()),
                other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is larger than {} bytes", super::MAX_BODY_BYTES),
                ),
                other => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", other.body_text()),
            }),
        }
    }
}

/// What is wrong with a name of something a person made (trimmed before):
/// 1 to 100 characters, no control characters.
/// For `#[serde(default, deserialize_with = "null_as_default")]`: `null`
/// is the same as leaving the field out.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// Turns numbers like `25.0` into integers, at any depth.
fn integral_floats(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats),
        Value::Object(m) => m.values_mut().for_each(integral_floats),
        _ => {}
    }
}

/// Path parameters with the API's error shape.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))
    }
}

impl FromRequestParts<Arc<Core>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        core: &Arc<Core>,
    ) -> Result<Self, Self::Rejection> {
        let unauthenticated =
            |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", m);
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            unauthenticated("missing `Authorization: Bearer <token>` header".into())
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                unauthenticated("the Authorization header must be `Bearer <token>`".into())
            })?;
        let (principal, tenant) = crate::identity::tokens::authenticate(core, token).await?;
        parts.extensions.insert(tenant);
        Ok(principal)
    }
}

/// The first query parameter given without a value (`?cursor=`): the API
/// refuses those rather than guess whether "empty" means "none".
pub(crate) fn empty_param(query: &str) -> Option<String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .find(|pair| pair.split_once('=').is_none_or(|(_, v)| v.is_empty()))
        .map(|pair| pair.split('=').next().unwrap_or_default().to_owned())
}

pub(crate) fn require_admin(p: &Principal) -> ApiResult<()> {
    require_admin_to(p, "make changes")
}

/// Refuses all but admins, saying what the caller tried (`read the audit log`).
pub(crate) fn require_admin_to(p: &Principal, what: &str) -> ApiResult<()> {
    if p.role.is_admin() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the `{}` role cannot {what}: that needs the enterprise_admin role",
                p.role
            ),
        ))
    }
}

pub(crate) fn require_operator(p: &Principal) -> ApiResult<()> {
    if !p.role.writes() {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the `viewer` role cannot make calls",
        ))
    } else {
        Ok(())
    }
}

/// `?limit=&cursor=` of every list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    pub(crate) limit: Option<i64>,
    pub(crate) cursor: Option<String>,
    pub(crate) group_id: Option<String>,
}

impl Page {
    /// The cursor, checked to be an id of the listed kind (`prefix`, e.g. `grp_`).
    pub(crate) fn cursor_of(&self, prefix: &str) -> ApiResult<Option<&str>> {
        match self.cursor.as_deref() {
            Some(c)
                if !c.starts_with(prefix)
                    || c.len() > 64
                    || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                Err(ApiError::invalid(format!(
                    "cursor `{}` is not a cursor of this list: use the `Link` header of the previous page",
                    c.chars().take(64).collect::<String>()
                )))
            }
            c => Ok(c),
        }
    }
}

pub(crate) fn page_limit(limit: Option<i64>) -> ApiResult<i64> {
    match limit {
        None => Ok(100),
        Some(l) if (1..=500).contains(&l) => Ok(l),
        Some(l) => Err(ApiError::invalid(format!("limit = {l} must be 1..=500"))),
    }
}

/// Query parameters with the API's error shape (`422 invalid_request`
/// naming the parameter).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}

/// Returns the page as a JSON array with a `Link` header when more remain.
pub(crate) fn paged<T: Serialize>(
    mut items: Vec<T>,
    limit: i64,
    path: &str,
    id_of: impl Fn(&T) -> String,
) -> Response {
    let mut headers = HeaderMap::new();
    if items.len() as i64 > limit {
        items.truncate(limit as usize);
        if let Some(last) = items.last()
            && let Ok(v) = HeaderValue::from_str(&format!(
                "</api/v1{path}?limit={limit}&cursor={}>; rel=\"next\"",
                id_of(last)
            ))
        {
            headers.insert(header::LINK, v);
        }
    }
    (headers, Json(items)).into_response()
}
