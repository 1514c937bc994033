//! Following an operation's pagination (`max_pages` on invoke): page
//! number, offset/limit, cursor and `Link: rel="next"` styles, up to a cap.
//! Each page is a call of its own (recorded in the call log); the answer
//! is the first page's normalized result plus every page's body and, where
//! the operation names its `items_pointer`, the items of all pages.

use std::time::Duration;

use dibop_protocol::{InvokeResult, ResponseBody};
use serde_json::{Map, Value, json};

use crate::Core;
use crate::catalogue::definition::{Operation, PaginationStyle};
use crate::connections::execute::{self, Resolved};

fn body_of(out: &InvokeResult) -> Value {
    match &out.result.body {
        ResponseBody::Json(t) => serde_json::from_str(t).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// The URL of `Link: <…>; rel="next"`, if any.
pub fn next_link(out: &InvokeResult) -> Option<String> {
    for (k, v) in &out.result.headers {
        if !k.eq_ignore_ascii_case("link") {
            continue;
        }
        for part in v.split(',') {
            let mut pieces = part.split(';');
            let url = pieces.next()?.trim();
            if pieces.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            }) {
                return Some(url.trim_start_matches('<').trim_end_matches('>').to_owned());
            }
        }
    }
    None
}

fn as_number(v: Option<&Value>) -> Option<i64> {
    v.and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    })
}

/// Follows the pagination after `first`; returns the invoke answer.
#[allow(clippy::too_many_arguments)]
pub async fn follow(
    core: &Core,
    c: &Resolved,
    op: &Operation,
    op_id: &str,
    parameters: &Map<String, Value>,
    first: InvokeResult,
    max_pages: u32,
    actor: &str,
) -> Value {
    let pagination = op.pagination.clone().unwrap_or_default();
    let style = pagination.style;
    let items_pointer = pagination.items_pointer.clone();
    let cap = pagination.max_pages.map_or(max_pages, |m| max_pages.min(m));
    let name_or = |v: &Option<String>, default: &'static str| -> String {
        v.clone().unwrap_or_else(|| default.to_owned())
    };
    let mut bodies = vec![body_of(&first)];
    let mut items: Vec<Value> = Vec::new();
    let mut total = Duration::ZERO;
    let take_items = |body: &Value, items: &mut Vec<Value>| -> usize {
        let list = match &items_pointer {
            Some(p) => body.pointer(p),
            None => Some(body),
        };
        match list.and_then(Value::as_array) {
            Some(a) => {
                items.extend(a.iter().cloned());
                a.len()
            }
            None => 0,
        }
    };
    let mut last_count = take_items(&bodies[0], &mut items);
    let mut params = parameters.clone();
    let mut truncated = false;
    let mut failure = None;
    let mut previous = first.clone();
    let base = reqwest::Url::parse(&c.base_url()).ok();
    for page in 1..=cap {
        if !previous.result.ok || style == PaginationStyle::None {
            break;
        }
        // What the next request is, by style; `None` means no more pages.
        let next: Option<Option<String>> = match style {
            PaginationStyle::PageNumber => {
                let name = name_or(&pagination.page_param, "page");
                let current = as_number(params.get(&name)).unwrap_or(1);
                (last_count > 0).then(|| {
                    params.insert(name, json!(current + 1));
                    None
                })
            }
            PaginationStyle::OffsetLimit => {
                let off = name_or(&pagination.offset_param, "offset");
                let lim = name_or(&pagination.limit_param, "limit");
                let current = as_number(params.get(&off)).unwrap_or(0);
                let limit = as_number(params.get(&lim));
                (last_count > 0 && limit.is_none_or(|l| last_count as i64 >= l)).then(|| {
                    params.insert(off, json!(current + last_count as i64));
                    None
                })
            }
            PaginationStyle::Cursor => {
                let name = name_or(&pagination.cursor_param, "cursor");
                let pointer = name_or(&pagination.cursor_pointer, "/next_cursor");
                match body_of(&previous).pointer(&pointer) {
                    Some(Value::String(s)) if !s.is_empty() => {
                        params.insert(name, json!(s));
                        Some(None)
                    }
                    Some(Value::Number(n)) => {
                        params.insert(name, json!(n));
                        Some(None)
                    }
                    _ => None,
                }
            }
            PaginationStyle::LinkHeader => next_link(&previous).and_then(|url| {
                // Only links to the same system are followed.
                let u = reqwest::Url::parse(&url)
                    .ok()
                    .or_else(|| base.as_ref()?.join(&url).ok())?;
                let same = base.as_ref().is_some_and(|b| b.origin() == u.origin());
                same.then(|| Some(u.to_string()))
            }),
            PaginationStyle::None => None,
        };
        let Some(next_url) = next else { break };
        if page == cap {
            truncated = true;
            break;
        }
        let mut request = match execute::prepare(core, c, op, &params).await {
            Ok(r) => r,
            Err(why) => {
                failure = Some(why.describe());
                break;
            }
        };
        if let Some(url) = next_url {
            request.call.url = url;
        }
        let (out, _, elapsed) = execute::run(core, c, op_id, request, actor, true).await;
        total += elapsed;
        let body = body_of(&out);
        last_count = take_items(&body, &mut items);
        if !out.result.ok {
            failure = Some(
                out.result
                    .error
                    .as_ref()
                    .map_or_else(|| "a page failed".to_owned(), |e| e.message.clone()),
            );
        }
        bodies.push(body);
        previous = out;
        if last_count == 0
            && !matches!(style, PaginationStyle::LinkHeader | PaginationStyle::Cursor)
        {
            break;
        }
    }
    let mut answer = execute::result_json(first, "", total);
    answer["ranOn"] = json!(if c.row.execution_mode == "agent_group" {
        previous.result.agent_id.clone()
    } else {
        "cloud".into()
    });
    answer["pageCount"] = json!(bodies.len());
    answer["pages"] = Value::Array(bodies);
    if items_pointer.is_some() || !items.is_empty() {
        answer["items"] = Value::Array(items);
    }
    answer["truncated"] = json!(truncated);
    if let Some(f) = failure {
        answer["paginationError"] = json!(f);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use dibop_protocol::{CallRequest, CallResult, ErrorClass};

    #[test]
    fn link_headers() {
        let req = CallRequest {
            call_id: 1,
            method: "GET".into(),
            url: "http://x/".into(),
            headers: vec![],
            body: vec![],
            timeout_ms: 1,
        };
        let mut r = CallResult::failure(&req, "a", ErrorClass::Internal, "");
        r.headers = vec![(
            "Link".into(),
            "<https://api.example/items?page=1>; rel=\"prev\", <https://api.example/items?page=3>; rel=\"next\"".into(),
        )];
        let out = InvokeResult {
            result: r,
            rotated_refresh_token: None,
            token_fetches: 0,
        };
        assert_eq!(
            next_link(&out).as_deref(),
            Some("https://api.example/items?page=3")
        );
    }
}
