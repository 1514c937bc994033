//! Worker processes that evaluate tenant-written expressions.
//!
//! jq is Turing-complete and jaq has no fuel: a filter can loop forever,
//! recurse until its stack overflows, or allocate without bound. In a thread
//! of the control plane the last two abort the whole process. So expressions
//! run in worker processes (`dibop expr-worker`, started on demand, kept
//! warm and reused): each with an address-space limit, a large stack for the
//! evaluation thread, and a deadline enforced by the parent, which kills a
//! worker that overruns it. A worker that dies takes only its own
//! evaluation with it; the next evaluation starts a fresh one.
//!
//! Frames on the worker's stdin and stdout: a 4-byte little-endian length
//! and a JSON document, `{"code", "input"}` in and `{"ok": [values]}` or
//! `{"err": "message"}` out.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The subcommand of `dibop` that runs a worker.
pub const WORKER_COMMAND: &str = "expr-worker";
/// Address space a worker may map (its heap, stacks and code).
pub const WORKER_MEMORY: u64 = 1024 * 1024 * 1024;
/// Stack of the worker's evaluation thread (deep but finite recursion).
const WORKER_STACK: usize = 256 * 1024 * 1024;
/// Largest frame either side accepts.
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// A running worker process.
#[derive(Debug)]
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

/// Why an evaluation in a worker did not give an answer.
#[derive(Debug)]
pub enum Failure {
    /// The deadline passed (the worker was killed).
    Deadline,
    /// The worker died (stack overflow, memory limit) or could not start.
    Crashed(String),
}

/// Warm workers, reused one evaluation at a time.
#[derive(Debug)]
pub struct Pool {
    program: PathBuf,
    idle: Mutex<Vec<Worker>>,
}

impl Pool {
    /// Workers started as `program expr-worker`.
    pub fn new(program: PathBuf) -> Pool {
        Pool {
            program,
            idle: Mutex::default(),
        }
    }

    fn spawn(&self) -> Result<Worker, Failure> {
        let mut child = Command::new(&self.program)
            .arg(WORKER_COMMAND)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Failure::Crashed(format!(
                    "cannot start the expression worker {}: {e}",
                    self.program.display()
                ))
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Failure::Crashed(
                "the expression worker has no pipes".into(),
            ));
        };
        Ok(Worker {
            child,
            stdin,
            stdout,
        })
    }

    /// Evaluates in a worker within `deadline`. The caller bounds how many
    /// evaluations run at once (and so how many workers exist).
    pub async fn eval(
        &self,
        code: &str,
        input: &Value,
        deadline: Duration,
    ) -> Result<Result<Vec<Value>, String>, Failure> {
        let reused = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut worker = match reused {
            Some(w) => w,
            None => self.spawn()?,
        };
        #[derive(serde::Serialize)]
        struct Request<'a> {
            code: &'a str,
            input: &'a Value,
        }
        let request = serde_json::to_vec(&Request { code, input })
            .map_err(|e| Failure::Crashed(e.to_string()))?;
        let exchange = async {
            write_frame(&mut worker.stdin, &request).await?;
            read_frame(&mut worker.stdout).await
        };
        match tokio::time::timeout(deadline, exchange).await {
            Ok(Ok(reply)) => {
                let reply: Value = serde_json::from_slice(&reply)
                    .map_err(|e| Failure::Crashed(format!("unreadable worker answer: {e}")))?;
                let answer = match (&reply["ok"], &reply["err"]) {
                    (Value::Array(values), _) => Ok(values.clone()),
                    (_, Value::String(e)) => Err(e.clone()),
                    _ => Err("the expression worker gave no answer".to_owned()),
                };
                self.idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(worker);
                Ok(answer)
            }
            Ok(Err(_)) => {
                // It died mid-evaluation: say how, if the OS says.
                let status = tokio::time::timeout(Duration::from_secs(1), worker.child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok);
                Err(Failure::Crashed(match status {
                    Some(s) => format!("the expression's worker process died ({s})"),
                    None => "the expression's worker process died".to_owned(),
                }))
            }
            Err(_) => {
                let _ = worker.child.start_kill();
                Err(Failure::Deadline)
            }
        }
    }
}

async fn write_frame(w: &mut ChildStdin, body: &[u8]) -> std::io::Result<()> {
    w.write_all(&(body.len() as u32).to_le_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await
}

async fn read_frame(r: &mut ChildStdout) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    Ok(body)
}

/// This executable, when it is `dibop` (which has the worker subcommand).
pub fn default_program() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let stem = exe.file_stem()?.to_str()?;
    (stem == "dibop").then_some(exe)
}

/// The worker's side: limits itself, then answers frames on stdin until it
/// closes. Runs as `dibop expr-worker`.
pub fn run_worker() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, setrlimit};
        let limit = Rlimit {
            current: Some(WORKER_MEMORY),
            maximum: Some(WORKER_MEMORY),
        };
        setrlimit(Resource::As, limit).map_err(std::io::Error::from)?;
    }
    let evaluator = std::thread::Builder::new()
        .name("expr".into())
        .stack_size(WORKER_STACK)
        .spawn(|| -> std::io::Result<()> {
            let mut stdin = std::io::stdin().lock();
            let mut stdout = std::io::stdout().lock();
            let mut compiled = crate::expr::Compiled::default();
            loop {
                let mut len = [0u8; 4];
                match stdin.read_exact(&mut len) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
                let len = u32::from_le_bytes(len) as usize;
                if len > MAX_FRAME {
                    return Err(std::io::Error::other("frame too large"));
                }
                let mut body = vec![0; len];
                stdin.read_exact(&mut body)?;
                let reply = match serde_json::from_slice::<Value>(&body) {
                    Ok(req) => match compiled
                        .eval_texts(req["code"].as_str().unwrap_or_default(), &req["input"])
                    {
                        // The outputs are JSON already: no second encoding.
                        Ok(texts) => format!("{{\"ok\":[{}]}}", texts.join(",")).into_bytes(),
                        Err(e) => json!({"err": e}).to_string().into_bytes(),
                    },
                    Err(e) => json!({"err": format!("unreadable request: {e}")})
                        .to_string()
                        .into_bytes(),
                };
                stdout.write_all(&(reply.len() as u32).to_le_bytes())?;
                stdout.write_all(&reply)?;
                stdout.flush()?;
            }
        })?;
    evaluator
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the evaluation thread panicked")))
}
