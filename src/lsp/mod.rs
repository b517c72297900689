//! `writ lsp`: a language server for `.writ` files over stdio (feature
//! `lsp`, in the `cli` set).
//!
//! Synchronous and single-threaded: it reads one message, answers it, and
//! reads the next. Every open document is checked with the `.writ` files
//! of its folder, as `writ check FOLDER` would (so a duplicate rule id in
//! a sibling file is reported), with the editor's unsaved text in place of
//! the disk's for every file it has open. docs/editors.md describes what
//! it offers.
//!
//! Messages are lsp-server's types; the framing is [`transport`]'s, which
//! bounds what it reads. A body that is not JSON, or not a request, is
//! answered with a JSON-RPC error and the server goes on; a header it
//! cannot read ends it (exit code 1), as the stream is then out of step.

mod features;
mod index;
mod text;
mod transport;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use indexmap::IndexMap;
use lsp_server::{ErrorCode, Message, Notification, Request, Response};
use lsp_types::{
    CompletionOptions, DidChangeTextDocumentParams, DidCloseTextDocumentParams,
    DidOpenTextDocumentParams, DocumentFormattingParams, DocumentSymbolParams,
    GotoDefinitionParams, HoverParams, HoverProviderCapability, InitializeParams, OneOf,
    PublishDiagnosticsParams, ServerCapabilities, ServerInfo, TextDocumentPositionParams,
    TextDocumentSyncCapability, TextDocumentSyncKind,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use features::Data;
use index::{folder_set, Index, SetFile};

/// Where the conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before `initialize`: requests are refused with `ServerNotInitialized`.
    Starting,
    /// Answering.
    Running,
    /// After `shutdown`: requests are refused, `exit` ends with code 0.
    ShutDown,
}

/// An open document.
#[derive(Debug)]
struct Document {
    path: Option<PathBuf>,
    text: Arc<str>,
}

/// The server's state and its output.
struct Server<W: Write> {
    out: W,
    phase: Phase,
    documents: IndexMap<String, Document>,
    data: Option<Data>,
}

/// Runs the server on stdin and stdout until `exit` (or the end of
/// stdin); returns the process's exit code: 0 after `shutdown` then
/// `exit`, 1 otherwise.
pub fn run() -> u8 {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    serve(stdin.lock(), stdout.lock())
}

/// Runs the server over any pair of streams (see [`run`]).
pub fn serve(mut input: impl BufRead, output: impl Write) -> u8 {
    let mut server = Server {
        out: output,
        phase: Phase::Starting,
        documents: IndexMap::new(),
        data: None,
    };
    loop {
        let body = match transport::read_frame(&mut input) {
            Ok(Some(body)) => body,
            Ok(None) => return u8::from(server.phase != Phase::ShutDown),
            Err(error) => {
                eprintln!("writ lsp: {error}; stopping");
                return 1;
            }
        };
        match server.receive(&body) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Exit) => return u8::from(server.phase != Phase::ShutDown),
            Err(error) => {
                eprintln!("writ lsp: cannot write to stdout: {error}; stopping");
                return 1;
            }
        }
    }
}

enum Flow {
    Continue,
    Exit,
}

/// A failed request: its JSON-RPC code and message.
struct Failure(ErrorCode, String);

impl<W: Write> Server<W> {
    fn receive(&mut self, body: &[u8]) -> std::io::Result<Flow> {
        let value: Value = match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(error) => {
                return self
                    .refuse(
                        ErrorCode::ParseError,
                        format!("the message is not JSON: {error}"),
                    )
                    .map(|()| Flow::Continue);
            }
        };
        let has_method = value.get("method").is_some_and(Value::is_string);
        let has_id = value.get("id").is_some_and(|id| !id.is_null());
        if !value.is_object() || !has_method && !has_id {
            return self
                .refuse(
                    ErrorCode::InvalidRequest,
                    "a message is a JSON object with a `method` (a request or a notification) or an `id` (a response)".to_owned(),
                )
                .map(|()| Flow::Continue);
        }
        if !has_method {
            // A response to a request of ours: the server sends none.
            return Ok(Flow::Continue);
        }
        if has_id {
            match serde_json::from_value::<Request>(value) {
                Ok(request) => self.request(request).map(|()| Flow::Continue),
                Err(error) => self
                    .refuse(ErrorCode::InvalidRequest, format!("not a request: {error}"))
                    .map(|()| Flow::Continue),
            }
        } else {
            match serde_json::from_value::<Notification>(value) {
                Ok(notification) => self.notification(notification),
                Err(error) => {
                    eprintln!("writ lsp: ignoring a malformed notification: {error}");
                    Ok(Flow::Continue)
                }
            }
        }
    }

    /// Answers a message that has no usable id (`id: null`).
    fn refuse(&mut self, code: ErrorCode, message: String) -> std::io::Result<()> {
        let body = json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": code as i32, "message": message},
        });
        transport::write_frame(&mut self.out, body.to_string().as_bytes())
    }

    fn send(&mut self, message: Message) -> std::io::Result<()> {
        let body = serde_json::to_vec(&message).map_err(std::io::Error::other)?;
        transport::write_frame(&mut self.out, &body)
    }

    fn request(&mut self, request: Request) -> std::io::Result<()> {
        let id = request.id.clone();
        let result = match (self.phase, request.method.as_str()) {
            (Phase::Starting, "initialize") => self.initialize(request.params),
            (Phase::Starting, _) => Err(Failure(
                ErrorCode::ServerNotInitialized,
                format!("`{}` before `initialize`", request.method),
            )),
            (Phase::ShutDown, _) => Err(Failure(
                ErrorCode::InvalidRequest,
                format!("`{}` after `shutdown`", request.method),
            )),
            (Phase::Running, "initialize") => Err(Failure(
                ErrorCode::InvalidRequest,
                "the server is already initialized".to_owned(),
            )),
            (Phase::Running, "shutdown") => {
                self.phase = Phase::ShutDown;
                Ok(Value::Null)
            }
            (Phase::Running, method) => self.answer(method, request.params),
        };
        let response = match result {
            Ok(value) => Response::new_ok(id, value),
            Err(Failure(code, message)) => Response::new_err(id, code as i32, message),
        };
        self.send(Message::Response(response))
    }

    fn initialize(&mut self, params: Value) -> Result<Value, Failure> {
        let params: InitializeParams = parse(params)?;
        if let Some(path) = params
            .initialization_options
            .as_ref()
            .and_then(|options| options.get("data"))
            .and_then(Value::as_str)
        {
            let path = PathBuf::from(path);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Failure(
                    ErrorCode::InvalidParams,
                    format!("cannot read the data file `{}`: {e}", path.display()),
                )
            })?;
            let value = crate::load::parse_data(&path.display().to_string(), text.as_bytes())
                .map_err(|e| Failure(ErrorCode::InvalidParams, e))?;
            let absolute = std::path::absolute(&path).unwrap_or(path);
            self.data = Some(Data {
                uri: text::path_to_uri(&absolute),
                text,
                value,
            });
        }
        self.phase = Phase::Running;
        let capabilities = ServerCapabilities {
            text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
            hover_provider: Some(HoverProviderCapability::Simple(true)),
            definition_provider: Some(OneOf::Left(true)),
            completion_provider: Some(CompletionOptions {
                trigger_characters: Some(vec![".".to_owned(), "@".to_owned()]),
                ..CompletionOptions::default()
            }),
            document_formatting_provider: Some(OneOf::Left(true)),
            document_symbol_provider: Some(OneOf::Left(true)),
            code_action_provider: Some(lsp_types::CodeActionProviderCapability::Simple(true)),
            ..ServerCapabilities::default()
        };
        Ok(json!({
            "capabilities": capabilities,
            "serverInfo": ServerInfo {
                name: "writ".to_owned(),
                version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            },
        }))
    }

    fn answer(&mut self, method: &str, params: Value) -> Result<Value, Failure> {
        match method {
            "textDocument/hover" => {
                let params: HoverParams = parse(params)?;
                let (set, file, offset) = self.locate(&params.text_document_position_params)?;
                let index = Index::build(&set);
                let hover = features::hover(&set, &index, self.data.as_ref(), file, offset);
                to_value(hover)
            }
            "textDocument/definition" => {
                let params: GotoDefinitionParams = parse(params)?;
                let (set, file, offset) = self.locate(&params.text_document_position_params)?;
                let index = Index::build(&set);
                to_value(features::definition(
                    &set,
                    &index,
                    self.data.as_ref(),
                    file,
                    offset,
                ))
            }
            "textDocument/completion" => {
                let params: lsp_types::CompletionParams = parse(params)?;
                let (set, file, offset) = self.locate(&params.text_document_position)?;
                let index = Index::build(&set);
                to_value(features::completion(
                    &set,
                    &index,
                    self.data.as_ref(),
                    file,
                    offset,
                ))
            }
            "textDocument/documentSymbol" => {
                let params: DocumentSymbolParams = parse(params)?;
                let uri = params.text_document.uri.as_str().to_owned();
                let (set, file) = self.set_of(&uri)?;
                let index = Index::build(&set);
                to_value(features::symbols(&set, &index, file))
            }
            "textDocument/formatting" => {
                let params: DocumentFormattingParams = parse(params)?;
                let uri = params.text_document.uri.as_str();
                let document = self.documents.get(uri).ok_or_else(|| not_open(uri))?;
                features::format(uri, &document.text)
                    .map_err(|why| Failure(ErrorCode::RequestFailed, why))
                    .and_then(to_value)
            }
            "textDocument/codeAction" => {
                let params: lsp_types::CodeActionParams = parse(params)?;
                let uri = params.text_document.uri.as_str();
                let document = self.documents.get(uri).ok_or_else(|| not_open(uri))?;
                to_value(features::code_actions(
                    &params.text_document.uri,
                    &document.text,
                    &params.context.diagnostics,
                ))
            }
            other => Err(Failure(
                ErrorCode::MethodNotFound,
                format!("`{other}` is not a method writ's language server has"),
            )),
        }
    }

    /// The set, the file's index in it and the byte offset of a position.
    fn locate(
        &self,
        at: &TextDocumentPositionParams,
    ) -> Result<(Vec<SetFile>, usize, usize), Failure> {
        let (set, file) = self.set_of(at.text_document.uri.as_str())?;
        let offset = text::offset(&set[file].text, at.position);
        Ok((set, file, offset))
    }

    /// The policy set an open document belongs to, and its index in it.
    fn set_of(&self, uri: &str) -> Result<(Vec<SetFile>, usize), Failure> {
        let document = self.documents.get(uri).ok_or_else(|| not_open(uri))?;
        let set = match document.path.as_deref().and_then(std::path::Path::parent) {
            Some(folder) => {
                let open: Vec<(PathBuf, String, Arc<str>)> = self
                    .documents
                    .iter()
                    .filter_map(|(uri, d)| Some((d.path.clone()?, uri.clone(), d.text.clone())))
                    .collect();
                folder_set(folder, &open)
            }
            None => vec![SetFile {
                uri: uri.to_owned(),
                name: uri.to_owned(),
                text: document.text.clone(),
            }],
        };
        let file = set
            .iter()
            .position(|f| f.uri == uri)
            .ok_or_else(|| not_open(uri))?;
        Ok((set, file))
    }

    fn notification(&mut self, notification: Notification) -> std::io::Result<Flow> {
        let method = notification.method.as_str();
        if method == "exit" {
            return Ok(Flow::Exit);
        }
        if self.phase != Phase::Running {
            return Ok(Flow::Continue);
        }
        let changed = match method {
            "textDocument/didOpen" => match parse::<DidOpenTextDocumentParams>(notification.params)
            {
                Ok(params) => {
                    let uri = params.text_document.uri.as_str().to_owned();
                    self.documents.insert(
                        uri.clone(),
                        Document {
                            path: text::uri_to_path(&uri),
                            text: Arc::from(params.text_document.text),
                        },
                    );
                    Some(uri)
                }
                Err(Failure(_, why)) => {
                    eprintln!("writ lsp: {why}");
                    None
                }
            },
            "textDocument/didChange" => {
                match parse::<DidChangeTextDocumentParams>(notification.params) {
                    Ok(params) => {
                        let uri = params.text_document.uri.as_str().to_owned();
                        // Full synchronisation: the last change is the text.
                        match (
                            self.documents.get_mut(&uri),
                            params.content_changes.into_iter().last(),
                        ) {
                            (Some(document), Some(change)) if change.range.is_none() => {
                                document.text = Arc::from(change.text);
                                Some(uri)
                            }
                            _ => None,
                        }
                    }
                    Err(Failure(_, why)) => {
                        eprintln!("writ lsp: {why}");
                        None
                    }
                }
            }
            "textDocument/didClose" => {
                match parse::<DidCloseTextDocumentParams>(notification.params) {
                    Ok(params) => {
                        let uri = params.text_document.uri.as_str().to_owned();
                        if let Some(document) = self.documents.shift_remove(&uri) {
                            self.publish(&uri, Vec::new())?;
                            // The folder's other documents now see the disk's text.
                            let sibling = self.documents.iter().find(|(_, d)| {
                                d.path.as_deref().and_then(std::path::Path::parent)
                                    == document.path.as_deref().and_then(std::path::Path::parent)
                                    && d.path.is_some()
                            });
                            sibling.map(|(uri, _)| uri.clone())
                        } else {
                            None
                        }
                    }
                    Err(Failure(_, why)) => {
                        eprintln!("writ lsp: {why}");
                        None
                    }
                }
            }
            // A save: the folder's files are read again (a sibling may have
            // changed on disk meanwhile).
            "textDocument/didSave" => notification
                .params
                .get("textDocument")
                .and_then(|d| d.get("uri"))
                .and_then(Value::as_str)
                .filter(|uri| self.documents.contains_key(*uri))
                .map(str::to_owned),
            // The other notifications (`initialized`, `$/...`) need nothing.
            _ => None,
        };
        if let Some(uri) = changed {
            self.check(&uri)?;
        }
        Ok(Flow::Continue)
    }

    /// Compiles the set of `uri` and publishes the diagnostics of every
    /// open document of it.
    fn check(&mut self, uri: &str) -> std::io::Result<()> {
        let Ok((set, file)) = self.set_of(uri) else {
            return Ok(());
        };
        let data = self.data.as_ref().map(|d| &d.value);
        let files = set.iter().map(|f| (f.name.clone(), f.text.clone()));
        let per_file = match crate::Engine::compile(files, data) {
            Ok(_) => vec![Vec::new(); set.len()],
            Err(found) => features::diagnostics(&set, &found, file),
        };
        for (target, diagnostics) in set.iter().zip(per_file) {
            if self.documents.contains_key(&target.uri) {
                self.publish(&target.uri, diagnostics)?;
            }
        }
        Ok(())
    }

    fn publish(
        &mut self,
        uri: &str,
        diagnostics: Vec<lsp_types::Diagnostic>,
    ) -> std::io::Result<()> {
        let Ok(uri) = uri.parse() else {
            return Ok(());
        };
        let params = PublishDiagnosticsParams {
            uri,
            diagnostics,
            version: None,
        };
        self.send(Message::Notification(Notification::new(
            "textDocument/publishDiagnostics".to_owned(),
            params,
        )))
    }
}

fn parse<T: DeserializeOwned>(params: Value) -> Result<T, Failure> {
    serde_json::from_value(params).map_err(|error| {
        Failure(
            ErrorCode::InvalidParams,
            format!("invalid parameters: {error}"),
        )
    })
}

fn to_value<T: serde::Serialize>(value: T) -> Result<Value, Failure> {
    serde_json::to_value(value).map_err(|error| {
        Failure(
            ErrorCode::InternalError,
            format!("cannot write the answer: {error}"),
        )
    })
}

fn not_open(uri: &str) -> Failure {
    Failure(
        ErrorCode::InvalidParams,
        format!("`{uri}` is not open (send `textDocument/didOpen` first)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
        out.extend_from_slice(body);
        out
    }

    /// Every method with parameters of every wrong shape, positions far
    /// out of range, and bytes that are not JSON: each request gets one
    /// answer and nothing panics.
    #[test]
    fn garbage_gets_answers_not_panics() {
        let mut input = Vec::new();
        let mut requests = 0;
        let mut request = |input: &mut Vec<u8>, method: &str, params: Value| {
            requests += 1;
            let body =
                json!({"jsonrpc": "2.0", "id": requests, "method": method, "params": params});
            input.extend(frame(body.to_string().as_bytes()));
        };
        request(&mut input, "initialize", json!({"capabilities": {}}));
        let uri = "untitled:garbage";
        let open = json!({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {"uri": uri, "languageId": "writ", "version": 1, "text": "@id(\"\u{1F600}\") permit if subject.\u{e9} == \"\n\"; const x = [[[["}}});
        input.extend(frame(open.to_string().as_bytes()));
        let methods = [
            "textDocument/hover",
            "textDocument/definition",
            "textDocument/completion",
            "textDocument/formatting",
            "textDocument/documentSymbol",
            "textDocument/codeAction",
            "initialize",
            "workspace/symbol",
        ];
        let shapes = [
            Value::Null,
            json!([]),
            json!({}),
            json!({"textDocument": {"uri": uri}, "position": {"line": u32::MAX, "character": u32::MAX}}),
            json!({"textDocument": {"uri": uri}, "position": {"line": 0, "character": 5}, "range": {"start": {"line": 0, "character": 0}, "end": {"line": 9, "character": 9}}, "context": {"diagnostics": [{"range": {"start": {"line": 0, "character": 3}, "end": {"line": 0, "character": 1}}, "message": "did you mean `x`?", "source": "writ"}]}, "options": {"tabSize": 2, "insertSpaces": true}}),
        ];
        for method in methods {
            for shape in &shapes {
                request(&mut input, method, shape.clone());
            }
        }
        // Bytes that are not JSON, and JSON that is not a message.
        let mut seed: u32 = 7;
        for _ in 0..20 {
            let noise: Vec<u8> = (0..40)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (seed >> 16) as u8
                })
                .collect();
            input.extend(frame(&noise));
            requests += 1;
        }
        input.extend(frame(b"\"just a string\""));
        requests += 1;

        let mut output = Vec::new();
        let code = serve(&input[..], &mut output);
        assert_eq!(code, 1, "no shutdown was asked for");
        let mut reader = &output[..];
        let mut answers = 0;
        while let Ok(Some(body)) = transport::read_frame(&mut reader) {
            let message: Value = serde_json::from_slice(&body).unwrap_or_default();
            if message.get("method").is_none() {
                answers += 1;
            }
        }
        assert_eq!(answers, requests);
    }
}
