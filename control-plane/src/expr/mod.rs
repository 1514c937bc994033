//! Expressions: the jq language (via jaq) for orchestration steps,
//! transforms and CDM mappings.
//!
//! An expression reads one input document, the **scope**
//! (`{"params", "steps", "ctx", "item", "error"}` in orchestrations), as
//! `.`; the same parts are also global variables (`$params`, `$steps`,
//! `$ctx`, `$item`, `$error`). jq has no built-in bound on work, so every
//! evaluation runs on the blocking pool, at most [`CONCURRENCY`] at a time,
//! with a deadline, a cap on the number of outputs and on their size. In
//! `dibop` they run in sandboxed worker processes ([`crate::expr::sandbox`]), so a
//! filter that recurses without end or allocates without bound stops only
//! its worker; without workers (embedding, unit tests) they run on threads
//! of this process, where a filter that never yields keeps its thread.

pub mod sandbox;

use std::sync::Arc;
use std::time::Duration;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::Val;
use serde::Deserialize as _;
use serde_json::Value;

/// Variables every expression may use besides `.`.
pub const GLOBALS: [&str; 5] = ["$params", "$steps", "$ctx", "$item", "$error"];
/// Most expression evaluations at once.
pub const CONCURRENCY: usize = 8;
/// Most outputs one evaluation may yield.
pub const MAX_OUTPUTS: usize = 10_000;
/// Most bytes the outputs of one evaluation may add up to.
pub const MAX_OUTPUT_BYTES: usize = 8 * 1024 * 1024;

type Filter = jaq_core::Filter<data::JustLut<Val>>;

/// Where in the code a compile error is.
fn column(code: &str, rest: &str) -> usize {
    code.len().saturating_sub(rest.len()) + 1
}

fn compile(code: &str) -> Result<Filter, String> {
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let modules = loader
        .load(&arena, File { code, path: () })
        .map_err(|errors| {
            let mut out = Vec::new();
            for (_, e) in errors {
                match e {
                    jaq_core::load::Error::Io(io) => {
                        out.extend(io.into_iter().map(|(p, m)| format!("{p}: {m}")))
                    }
                    jaq_core::load::Error::Lex(lex) => {
                        out.extend(lex.into_iter().map(|(exp, rest)| {
                            format!(
                                "at column {}: expected {}",
                                column(code, rest),
                                exp.as_str()
                            )
                        }))
                    }
                    jaq_core::load::Error::Parse(parse) => {
                        out.extend(parse.into_iter().map(|(exp, rest)| {
                            format!(
                                "at column {}: expected {}",
                                column(code, rest),
                                exp.as_str()
                            )
                        }))
                    }
                }
            }
            out.join("; ")
        })?;
    Compiler::default()
        .with_funs(funs)
        .with_global_vars(GLOBALS)
        .compile(modules)
        .map_err(|errors| {
            errors
                .into_iter()
                .flat_map(|(_, es)| es)
                .map(|(name, undefined)| {
                    let what = match undefined {
                        jaq_core::compile::Undefined::Var => "variable",
                        jaq_core::compile::Undefined::Filter(_) => "filter",
                        jaq_core::compile::Undefined::Mod => "module",
                        jaq_core::compile::Undefined::Label => "label",
                        _ => "name",
                    };
                    format!(
                        "at column {}: undefined {what} `{name}`",
                        column(code, name)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
}

/// Longest expression accepted, in bytes.
pub const MAX_LEN: usize = 64 * 1024;
/// Deepest nesting of brackets (`(`, `[`, `{`, string interpolation) accepted.
pub const MAX_NESTING: usize = 128;
/// Stack of the thread that parses and compiles an expression being checked.
/// jq's parser and compiler recurse once per nesting level and per operator
/// of a right-associative chain (`a | b | c …`), and an expression of
/// [`MAX_LEN`] bytes stays far inside this (only the pages it touches are
/// ever committed).
const CHECK_STACK: usize = 256 * 1024 * 1024;

/// The deepest bracket nesting in `code`, counted without parsing it (so a
/// hostile expression cannot exhaust a stack while being measured).
pub fn nesting(code: &str) -> usize {
    // What each open level is: a bracket in code, a string, or an
    // interpolation `\(…)` inside a string.
    #[derive(Clone, Copy, PartialEq)]
    enum Level {
        Bracket,
        Str,
        Interpolation,
    }
    let mut stack: Vec<Level> = Vec::new();
    let mut deepest = 0;
    let mut chars = code.chars();
    while let Some(c) = chars.next() {
        if stack.last() == Some(&Level::Str) {
            match c {
                // An escape: `\(` opens an interpolation, others are skipped.
                '\\' => stack.extend((chars.next() == Some('(')).then_some(Level::Interpolation)),
                '"' => {
                    stack.pop();
                }
                _ => {}
            }
        } else {
            match c {
                '"' => stack.push(Level::Str),
                '(' | '[' | '{' => stack.push(Level::Bracket),
                ')' | ']' | '}' => {
                    stack.pop();
                }
                '#' => {
                    // A comment runs to the end of the line.
                    for c in chars.by_ref() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                _ => {}
            }
        }
        deepest = deepest.max(stack.len());
    }
    deepest
}

/// Checks that `code` is a valid expression (syntax and names): no longer
/// than [`MAX_LEN`], nested at most [`MAX_NESTING`] deep, then parsed and
/// compiled on a thread with a stack large enough for any such expression.
pub fn check(code: &str) -> Result<(), String> {
    if code.len() > MAX_LEN {
        return Err(format!(
            "the expression is longer than {} KiB",
            MAX_LEN / 1024
        ));
    }
    let depth = nesting(code);
    if depth > MAX_NESTING {
        return Err(format!(
            "the expression nests {depth} levels deep; at most {MAX_NESTING} are allowed"
        ));
    }
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("dibop-expr-check".into())
            .stack_size(CHECK_STACK)
            .spawn_scoped(scope, || compile(code).map(|_| ()))
            .map_err(|e| format!("cannot start the expression checker: {e}"))?
            .join()
            .unwrap_or_else(|_| Err("the expression could not be checked".into()))
    })
}

fn to_val(v: &Value) -> Val {
    Val::deserialize(v).unwrap_or(Val::Null)
}

/// Compiled expressions, reused by a worker process.
#[derive(Default)]
pub struct Compiled {
    filters: std::collections::HashMap<String, Filter>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Compiled({} filters)", self.filters.len())
    }
}

impl Compiled {
    /// Most filters kept; past it the cache starts over.
    const MAX: usize = 1024;

    /// Evaluates `code` on `input`, compiling it once; outputs as JSON text.
    pub fn eval_texts(&mut self, code: &str, input: &Value) -> Result<Vec<String>, String> {
        if !self.filters.contains_key(code) {
            let filter = compile(code)?;
            if self.filters.len() >= Self::MAX {
                self.filters.clear();
            }
            self.filters.insert(code.to_owned(), filter);
        }
        run_texts(&self.filters[code], input)
    }

    /// Evaluates `code` on `input`, compiling it once.
    pub fn eval(&mut self, code: &str, input: &Value) -> Result<Vec<Value>, String> {
        if !self.filters.contains_key(code) {
            let filter = compile(code)?;
            if self.filters.len() >= Self::MAX {
                self.filters.clear();
            }
            self.filters.insert(code.to_owned(), filter);
        }
        run(&self.filters[code], input)
    }
}

/// Evaluates `code` on `input` here, on this thread (use [`Evaluator::eval`] from async code).
pub fn eval_blocking(code: &str, input: &Value) -> Result<Vec<Value>, String> {
    run(&compile(code)?, input)
}

fn run(filter: &Filter, input: &Value) -> Result<Vec<Value>, String> {
    Ok(run_texts(filter, input)?
        .iter()
        .map(|text| serde_json::from_str(text).unwrap_or(Value::Null))
        .collect())
}

/// Every output as JSON text (what a worker sends back as is).
fn run_texts(filter: &Filter, input: &Value) -> Result<Vec<String>, String> {
    let globals = ["params", "steps", "ctx", "item", "error"].map(|k| to_val(&input[k]));
    let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new(globals));
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for v in filter.id.run((ctx, to_val(input))).map(unwrap_valr) {
        let v = v.map_err(|e| format!("{e}"))?;
        if out.len() == MAX_OUTPUTS {
            return Err(format!(
                "the expression yields more than {MAX_OUTPUTS} values"
            ));
        }
        let text = v.to_string();
        bytes += text.len();
        if bytes > MAX_OUTPUT_BYTES {
            return Err(format!(
                "the expression's output is larger than {} MiB",
                MAX_OUTPUT_BYTES / 1024 / 1024
            ));
        }
        // jq's NaN is not JSON.
        out.push(
            if text.contains("NaN") && text.trim_start_matches('-') == "NaN" {
                "null".to_owned()
            } else {
                text
            },
        );
    }
    Ok(out)
}

/// Evaluates a plain path (`.steps.list.response`, `$params.vin`,
/// `.items[0]["odd key"]`) here, without a worker: most references in
/// templates and steps are such paths. `None` for anything else, and for a
/// path that does not fit the data (jq's own error message is wanted then).
pub fn simple_path(code: &str, input: &Value) -> Option<Value> {
    let code = code.trim();
    let (mut cur, mut rest) = if let Some(r) = code.strip_prefix('$') {
        let end = r
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(r.len());
        let name = &r[..end];
        if !GLOBALS.contains(&format!("${name}").as_str()) {
            return None;
        }
        (input.get(name).unwrap_or(&Value::Null), &r[end..])
    } else if code.starts_with('.') {
        (input, code)
    } else {
        return None;
    };
    if code == "." {
        return Some(input.clone());
    }
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            if r.starts_with('[') {
                return None;
            }
            let end = r
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(r.len());
            if end == 0 || r.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            cur = match cur {
                Value::Object(m) => m.get(&r[..end]).unwrap_or(&Value::Null),
                Value::Null => &Value::Null,
                _ => return None,
            };
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']')?;
            let key = &r[..close];
            cur = if let Ok(i) = key.parse::<usize>() {
                match cur {
                    Value::Array(a) => a.get(i).unwrap_or(&Value::Null),
                    Value::Null => &Value::Null,
                    _ => return None,
                }
            } else if key.starts_with('"') {
                let k: String = serde_json::from_str(key).ok()?;
                match cur {
                    Value::Object(m) => m.get(&k).unwrap_or(&Value::Null),
                    Value::Null => &Value::Null,
                    _ => return None,
                }
            } else {
                return None;
            };
            rest = &r[close + 1..];
        } else {
            return None;
        }
    }
    Some(cur.clone())
}

/// Most evaluation threads alive at once, counting ones past their deadline.
pub const MAX_THREADS: usize = 64;

/// The expression pool: bounded concurrency and a deadline per evaluation.
///
/// Each evaluation runs on a thread of its own (not the async runtime's
/// blocking pool, whose shutdown would wait for a filter that never ends).
/// A filter past its deadline is abandoned: its caller gets an error and
/// its slot is freed, and at most [`MAX_THREADS`] threads may be alive.
#[derive(Debug)]
pub struct Evaluator {
    slots: Arc<tokio::sync::Semaphore>,
    deadline: Duration,
    alive: Arc<std::sync::atomic::AtomicUsize>,
    /// Worker processes, when expressions run sandboxed (see [`crate::expr::sandbox`]).
    workers: Option<crate::expr::sandbox::Pool>,
}

impl Default for Evaluator {
    fn default() -> Self {
        Evaluator::new(CONCURRENCY, Duration::from_secs(5))
    }
}

impl Evaluator {
    /// A pool of `concurrency` evaluations with a `deadline` each.
    pub fn new(concurrency: usize, deadline: Duration) -> Self {
        Evaluator {
            slots: Arc::new(tokio::sync::Semaphore::new(concurrency)),
            deadline,
            alive: Arc::default(),
            workers: None,
        }
    }

    /// Evaluations in worker processes of `program` (`dibop`), at most
    /// [`CONCURRENCY`] at once, 5 s each.
    pub fn in_workers(program: std::path::PathBuf) -> Self {
        Evaluator {
            workers: Some(crate::expr::sandbox::Pool::new(program)),
            ..Evaluator::default()
        }
    }

    /// The same with another deadline per evaluation.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Whether expressions run in sandboxed worker processes.
    pub fn sandboxed(&self) -> bool {
        self.workers.is_some()
    }

    /// Evaluates `code` on `input`: every output, or why not.
    pub async fn eval(&self, code: &str, input: &Value) -> Result<Vec<Value>, String> {
        use std::sync::atomic::Ordering;
        if let Some(v) = simple_path(code, input) {
            return Ok(vec![v]);
        }
        let _permit = self
            .slots
            .acquire()
            .await
            .map_err(|_| "the expression pool is closed".to_owned())?;
        if let Some(pool) = &self.workers {
            return match pool.eval(code, input, self.deadline).await {
                Ok(answer) => answer,
                Err(crate::expr::sandbox::Failure::Deadline) => Err(format!(
                    "the expression did not finish within {} s",
                    self.deadline.as_secs_f64()
                )),
                Err(crate::expr::sandbox::Failure::Crashed(why)) => Err(format!(
                    "the expression was stopped: it recursed too deeply or needed more than {} GiB \
                     of memory ({why})",
                    crate::expr::sandbox::WORKER_MEMORY / 1024 / 1024 / 1024
                )),
            };
        }
        if self.alive.fetch_add(1, Ordering::SeqCst) >= MAX_THREADS {
            self.alive.fetch_sub(1, Ordering::SeqCst);
            return Err("too many expressions are still running past their deadline".into());
        }
        let (code, input) = (code.to_owned(), input.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let alive = self.alive.clone();
        let spawned = std::thread::Builder::new()
            .name("dibop-expr".into())
            .stack_size(64 * 1024 * 1024)
            .spawn(move || {
                let _ = tx.send(eval_blocking(&code, &input));
                alive.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            self.alive.fetch_sub(1, Ordering::SeqCst);
            return Err(format!("cannot start an expression thread: {e}"));
        }
        match tokio::time::timeout(self.deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the expression failed".into()),
            Err(_) => Err(format!(
                "the expression did not finish within {} s",
                self.deadline.as_secs_f64()
            )),
        }
    }

    /// The first output of `code` (null when it yields nothing).
    pub async fn eval_one(&self, code: &str, input: &Value) -> Result<Value, String> {
        Ok(self
            .eval(code, input)
            .await?
            .into_iter()
            .next()
            .unwrap_or(Value::Null))
    }
}

/// Replaces every `{{ expression }}` in `template` with its first output
/// (strings as they are, other values as JSON).
pub async fn render(
    evaluator: &Evaluator,
    template: &str,
    scope: &Value,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!("`{{{{` without `}}}}` in `{template}`"));
        };
        let code = after[..end].trim();
        match evaluator.eval_one(code, scope).await {
            Ok(Value::String(s)) => out.push_str(&s),
            Ok(Value::Null) => {}
            Ok(v) => out.push_str(&v.to_string()),
            Err(e) => return Err(format!("`{code}`: {e}")),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The `{{ … }}` expressions in a template, for validation.
pub fn template_expressions(template: &str) -> Result<Vec<&str>, String> {
    let mut found = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "`{{` without `}}`".to_owned())?;
        found.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jq_over_the_scope() {
        let scope = json!({"params": {"vin": "WVW"}, "steps": {"list": {"response": {"items": [{"p": 2}, {"p": 5}]}}}});
        assert_eq!(
            eval_blocking(".params.vin", &scope).unwrap(),
            [json!("WVW")]
        );
        assert_eq!(
            eval_blocking(
                "[$steps.list.response.items[] | select(.p > 3) | .p * 10]",
                &scope
            )
            .unwrap(),
            [json!([50])]
        );
        assert_eq!(
            eval_blocking("$params.vin | ascii_downcase", &scope).unwrap(),
            [json!("wvw")]
        );
        assert_eq!(eval_blocking("empty", &scope).unwrap(), Vec::<Value>::new());
    }

    #[test]
    fn plain_paths_need_no_worker_and_agree_with_jq() {
        let scope = json!({"params": {"vin": "WVW"}, "steps": {"list": {"response": {"items": [{"p": 2}, {"odd key": 5}]}}}});
        for code in [
            ".",
            ".params.vin",
            "$params.vin",
            ".steps.list.response.items[0].p",
            ".steps.list.response.items[1][\"odd key\"]",
            ".steps.nope.deeper",
            "$steps.list.response.items[7]",
            " .params ",
        ] {
            let fast = simple_path(code, &scope).unwrap_or_else(|| panic!("{code}"));
            assert_eq!(vec![fast], eval_blocking(code, &scope).unwrap(), "{code}");
        }
        for code in [
            ".params.vin.x",
            ".items[]",
            ".a | .b",
            "$nope",
            ".a[-1]",
            "1",
            ".a.[0]",
        ] {
            assert!(simple_path(code, &scope).is_none(), "{code}");
        }
    }

    #[test]
    fn errors_say_where() {
        let e = check(".a | (").unwrap_err();
        assert!(e.contains("column"), "{e}");
        let e = check("nosuchfilter(1)").unwrap_err();
        assert!(e.contains("undefined filter `nosuchfilter`"), "{e}");
        let e = check("$nope").unwrap_err();
        assert!(e.contains("undefined variable"), "{e}");
        let e = eval_blocking(".a + 1", &json!({"a": "x"})).unwrap_err();
        assert!(e.contains("cannot"), "{e}");
    }

    /// Expressions as deep or as long as allowed, in every shape that makes
    /// jq's parser or compiler recurse: each is refused or checked, and the
    /// process lives.
    #[test]
    fn hostile_expressions_cannot_exhaust_the_stack() {
        let deep = format!("{}1{}", "(".repeat(1000), ")".repeat(1000));
        let e = check(&deep).unwrap_err();
        assert!(e.contains("1000 levels deep"), "{e}");
        let deep_string = format!("\"{}1{}\"", "\\(".repeat(300), ")".repeat(300));
        assert!(check(&deep_string).unwrap_err().contains("levels deep"));
        let deep_arrays = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert!(check(&deep_arrays).is_err());
        let at_limit = format!("{}1{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        check(&at_limit).unwrap();
        // Chains that nest without brackets, each as long as allowed.
        let fill = |unit: &str, end: &str| {
            let n = (MAX_LEN - end.len()) / unit.len();
            format!("{}{end}", unit.repeat(n))
        };
        for code in [
            fill(". | ", "."),
            fill("1 + ", "1"),
            fill(". as $x | ", "."),
            fill("- ", "1"),
            fill("try ", "1"),
            fill("def f: ", "1"),
            fill(". // ", "."),
            fill("not | ", "."),
            fill(".a", ""),
            fill("1, ", "1"),
            fill("if . then . else ", ". end"),
        ] {
            let _ = check(&code);
        }
        assert!(
            check(&"1".repeat(MAX_LEN + 1))
                .unwrap_err()
                .contains("longer than")
        );
        // Comments and strings do not count as nesting.
        assert_eq!(nesting("\"((((\" # [[[[\n."), 1);
        assert_eq!(nesting("\"a\\(.b | (.c))\""), 3);
    }

    #[test]
    fn outputs_are_bounded() {
        let e = eval_blocking("range(20000)", &json!({})).unwrap_err();
        assert!(e.contains("more than 10000"), "{e}");
        let e = eval_blocking("[range(1000000)] | tostring", &json!({})).err();
        assert!(e.is_none() || e.unwrap().contains("larger"));
    }

    #[tokio::test]
    async fn runaway_filters_hit_the_deadline_and_templates_render() {
        let ev = Evaluator::new(2, Duration::from_millis(200));
        let e = ev.eval("def f: f; f", &json!({})).await.unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        let scope = json!({"params": {"vin": "WVW", "n": 3}});
        assert_eq!(
            render(&ev, "/vehicles/{{ .params.vin }}?n={{ .params.n }}", &scope)
                .await
                .unwrap(),
            "/vehicles/WVW?n=3"
        );
        assert!(render(&ev, "{{ .params.vin", &scope).await.is_err());
    }
}
