//! `writ lsp` driven over stdio as an editor drives it: the real binary, a
//! policy folder on disk, and every answer read from its stdout.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use common::server::{TempDir, BIN};
use serde_json::{json, Value};

/// The language server child and what it wrote, message by message.
struct Client {
    child: Child,
    stdin: ChildStdin,
    messages: Receiver<Result<Value, String>>,
    next_id: i64,
}

impl Client {
    fn start() -> Client {
        let mut child = Command::new(BIN)
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start writ lsp");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (send, messages) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let message = read_message(&mut reader);
                let end = message.is_err();
                if send.send(message).is_err() || end {
                    return;
                }
            }
        });
        Client {
            child,
            stdin,
            messages,
            next_id: 0,
        }
    }

    fn send_raw(&mut self, body: &[u8]) {
        let head = format!("Content-Length: {}\r\n\r\n", body.len());
        self.stdin.write_all(head.as_bytes()).expect("write head");
        self.stdin.write_all(body).expect("write body");
        self.stdin.flush().expect("flush");
    }

    fn notify(&mut self, method: &str, params: Value) {
        let body = json!({"jsonrpc": "2.0", "method": method, "params": params});
        self.send_raw(body.to_string().as_bytes());
    }

    /// Sends a request and returns its response (notifications that come
    /// first are kept for [`Client::diagnostics`]).
    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_raw(body.to_string().as_bytes());
        self.response(&json!(id))
    }

    /// The next message, within ten seconds.
    fn next(&mut self) -> Value {
        match self.messages.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(message)) => message,
            Ok(Err(error)) => panic!("the server's output ended: {error}"),
            Err(_) => panic!("no message from the server within 10 s"),
        }
    }

    fn response(&mut self, id: &Value) -> Value {
        loop {
            let message = self.next();
            if message.get("id") == Some(id) && message.get("method").is_none() {
                return message;
            }
        }
    }

    /// The next `publishDiagnostics` for `uri`.
    fn diagnostics(&mut self, uri: &str) -> Vec<Value> {
        loop {
            let message = self.next();
            if message["method"] == "textDocument/publishDiagnostics"
                && message["params"]["uri"] == uri
            {
                return message["params"]["diagnostics"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
            }
        }
    }

    fn initialize(&mut self) -> Value {
        let reply = self.request(
            "initialize",
            json!({"processId": null, "rootUri": null, "capabilities": {}}),
        );
        self.notify("initialized", json!({}));
        reply
    }

    /// `shutdown` then `exit`; returns the exit code.
    fn finish(&mut self) -> Option<i32> {
        let reply = self.request("shutdown", Value::Null);
        assert_eq!(reply["result"], Value::Null, "{reply}");
        assert!(reply.get("error").is_none(), "{reply}");
        self.notify("exit", Value::Null);
        self.wait()
    }

    fn wait(&mut self) -> Option<i32> {
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("the server did not exit within 5 s");
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_message(reader: &mut impl BufRead) -> Result<Value, String> {
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("end of output".to_owned());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("Content-Length: ") {
            length = value.parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length.ok_or("no Content-Length")?];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

fn uri(path: &std::path::Path) -> String {
    format!("file://{}", path.display())
}

fn at(line: u32, character: u32) -> Value {
    json!({"line": line, "character": character})
}

const BROKEN: &str = "/// Tokens last a quarter of an hour.\nconst short = 15m;\n\n@id(\"deploy\")\npermit if subject.repository == \"acme/api\" and sensitivity <= internall\n  grant [\"deploy:{resource.id}\"] for short;\n";

#[test]
fn an_editor_session_from_initialize_to_exit() {
    let dir = TempDir::new("lsp-session");
    // A sibling file in the same folder: its rule id is used again below.
    std::fs::write(
        dir.file("base.writ"),
        "@id(\"base.ci\")\nforbid if subject.kind == \"ci\" and not subject.attested;\n",
    )
    .expect("write base.writ");
    let path = dir.file("deploy.writ");
    std::fs::write(&path, BROKEN).expect("write deploy.writ");
    let doc = uri(&path);

    let mut client = Client::start();
    let init = client.initialize();
    let capabilities = &init["result"]["capabilities"];
    assert_eq!(capabilities["hoverProvider"], true, "{init}");
    assert_eq!(capabilities["definitionProvider"], true, "{init}");
    assert_eq!(capabilities["documentFormattingProvider"], true, "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "writ");

    // didOpen with an unknown level: one diagnostic, on `internall`.
    client.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": doc, "languageId": "writ", "version": 1, "text": BROKEN}}),
    );
    let diagnostics = client.diagnostics(&doc);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let first = &diagnostics[0];
    assert_eq!(first["code"], "writ::check::unknown_name", "{first}");
    assert_eq!(first["severity"], 1);
    assert_eq!(first["source"], "writ");
    let line = BROKEN.lines().nth(4).expect("line 5");
    let column = line.find("internall").expect("internall") as u64;
    assert_eq!(
        first["range"],
        json!({"start": {"line": 4, "character": column}, "end": {"line": 4, "character": column + 9}}),
        "{first}"
    );
    assert!(
        first["message"]
            .as_str()
            .unwrap_or("")
            .contains("did you mean `internal`?"),
        "the help names the level: {first}"
    );
    // The quick fix the help suggests, sent back as an editor does.
    let reply = client.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": doc}, "range": first["range"], "context": {"diagnostics": [first]}}),
    );
    let action = &reply["result"][0];
    assert_eq!(
        action["title"], "Replace `internall` with `internal`",
        "{reply}"
    );
    assert_eq!(action["kind"], "quickfix");
    assert_eq!(
        action["edit"]["changes"][&doc],
        json!([{"range": first["range"], "newText": "internal"}]),
        "{reply}"
    );

    // A duplicate of the sibling's id: a cross-file error, on this file.
    let duplicate = BROKEN
        .replace("internall", "internal")
        .replace("@id(\"deploy\")", "@id(\"base.ci\")");
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": doc, "version": 2}, "contentChanges": [{"text": duplicate}]}),
    );
    let diagnostics = client.diagnostics(&doc);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(
        diagnostics[0]["code"], "writ::check::duplicate_id",
        "{diagnostics:?}"
    );
    assert_eq!(
        diagnostics[0]["range"]["start"]["line"], 3,
        "{diagnostics:?}"
    );

    // A misspelled attribute: the fix writes the field only.
    let misspelled = BROKEN
        .replace("internall", "internal")
        .replace("subject.repository ==", "subject.kidn ==");
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": doc, "version": 2}, "contentChanges": [{"text": misspelled}]}),
    );
    let diagnostics = client.diagnostics(&doc);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let reply = client.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": doc}, "range": diagnostics[0]["range"], "context": {"diagnostics": diagnostics}}),
    );
    let edits = &reply["result"][0]["edit"]["changes"][&doc];
    assert_eq!(edits[0]["newText"], "kind", "{reply}");
    assert_eq!(edits[0]["range"]["start"], at(4, 18), "{reply}");
    assert_eq!(edits[0]["range"]["end"], at(4, 22), "{reply}");

    // didChange fixing it: an empty list.
    let fixed = BROKEN.replace("internall", "internal");
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": doc, "version": 3}, "contentChanges": [{"text": fixed}]}),
    );
    assert_eq!(client.diagnostics(&doc), Vec::<Value>::new());

    // A sibling changed on disk is read again on save: its rule now
    // takes this file's id.
    std::fs::write(
        dir.file("base.writ"),
        "@id(\"deploy\")\nforbid if subject.kind == \"ci\" and not subject.attested;\n",
    )
    .expect("rewrite base.writ");
    client.notify(
        "textDocument/didSave",
        json!({"textDocument": {"uri": doc}}),
    );
    let diagnostics = client.diagnostics(&doc);
    assert!(
        diagnostics
            .iter()
            .any(|d| d["code"] == "writ::check::duplicate_id"),
        "{diagnostics:?}"
    );
    std::fs::write(
        dir.file("base.writ"),
        "@id(\"base.ci\")\nforbid if subject.kind == \"ci\" and not subject.attested;\n",
    )
    .expect("restore base.writ");
    client.notify(
        "textDocument/didSave",
        json!({"textDocument": {"uri": doc}}),
    );
    assert_eq!(client.diagnostics(&doc), Vec::<Value>::new());

    let document = json!({"uri": doc});
    // Hover on `repository`, a free attribute; on `sensitivity`; on
    // `short`, a constant with a doc comment; on the rule id.
    let hover = |client: &mut Client, line: u32, character: u32| -> String {
        let reply = client.request(
            "textDocument/hover",
            json!({"textDocument": document, "position": at(line, character)}),
        );
        reply["result"]["contents"]["value"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let text = hover(&mut client, 4, 22);
    assert!(
        text.contains("`subject.repository`") && text.contains("free attribute"),
        "{text}"
    );
    let text = hover(&mut client, 4, 13);
    assert!(
        text.contains("`subject`") && text.contains("`attested`: bool"),
        "{text}"
    );
    let column = fixed
        .lines()
        .nth(4)
        .and_then(|l| l.find("sensitivity"))
        .unwrap_or(0) as u32;
    let text = hover(&mut client, 4, column + 3);
    assert!(
        text.contains("sensitivity level") && text.contains("`public` < `internal`"),
        "{text}"
    );
    let text = hover(&mut client, 5, 40);
    assert!(
        text.contains("const short = 15m;") && text.contains("quarter of an hour"),
        "{text}"
    );
    let text = hover(&mut client, 3, 6);
    assert!(text.contains("**rule** `deploy` (`permit`)"), "{text}");

    // Definition of `short` (line 5) is its declaration (line 1).
    let reply = client.request(
        "textDocument/definition",
        json!({"textDocument": document, "position": at(5, 40)}),
    );
    assert_eq!(
        reply["result"],
        json!({"uri": doc, "range": {"start": {"line": 1, "character": 6}, "end": {"line": 1, "character": 11}}}),
        "{reply}"
    );

    // Completion after `subject.`: its fields; elsewhere, keywords, levels
    // and constants.
    let probe = fixed.replace("subject.repository ==", "subject.");
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": doc, "version": 4}, "contentChanges": [{"text": probe}]}),
    );
    let _ = client.diagnostics(&doc);
    let reply = client.request(
        "textDocument/completion",
        json!({"textDocument": document, "position": at(4, 18)}),
    );
    let labels: Vec<&str> = reply["result"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["label"].as_str()).collect())
        .unwrap_or_default();
    for field in ["id", "kind", "attested", "owner"] {
        assert!(labels.contains(&field), "`{field}` in {labels:?}");
    }
    assert!(!labels.contains(&"permit"), "{labels:?}");
    let reply = client.request(
        "textDocument/completion",
        json!({"textDocument": document, "position": at(2, 0)}),
    );
    let labels: Vec<&str> = reply["result"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["label"].as_str()).collect())
        .unwrap_or_default();
    for word in [
        "permit",
        "forbid",
        "restricted",
        "short",
        "subject",
        "sensitivity",
        "len",
    ] {
        assert!(labels.contains(&word), "`{word}` in {labels:?}");
    }

    // Formatting: one edit, the whole file in `writ fmt`'s layout.
    let messy = "const short = 15m;\n@id(\"deploy\") permit   if action == \"deploy\"   grant [\"deploy:x\"] for short;\n";
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": doc, "version": 5}, "contentChanges": [{"text": messy}]}),
    );
    let _ = client.diagnostics(&doc);
    let reply = client.request(
        "textDocument/formatting",
        json!({"textDocument": document, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    let edits = reply["result"].as_array().cloned().unwrap_or_default();
    assert_eq!(edits.len(), 1, "{reply}");
    let expected = writ::format_source("x", messy).expect("formats");
    assert_eq!(edits[0]["newText"], expected.as_str());
    assert_eq!(edits[0]["range"]["start"], at(0, 0));
    assert_eq!(edits[0]["range"]["end"], at(2, 0));

    // The outline: the constant and the rule, by id.
    let reply = client.request(
        "textDocument/documentSymbol",
        json!({"textDocument": document}),
    );
    let names: Vec<&str> = reply["result"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["short", "deploy"], "{reply}");

    assert_eq!(client.finish(), Some(0));
}

#[test]
fn bad_input_is_answered_and_never_crashes_the_server() {
    let mut client = Client::start();

    // A request before `initialize`: ServerNotInitialized (-32002).
    let reply = client.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": "file:///x.writ"}, "position": at(0, 0)}),
    );
    assert_eq!(reply["error"]["code"], -32002, "{reply}");

    // A body that is not JSON: ParseError (-32700), and the server goes on.
    client.send_raw(b"{\"jsonrpc\": \"2.0\", \"id\": 7, \"method\":");
    let reply = client.next();
    assert_eq!(reply["error"]["code"], -32700, "{reply}");
    assert_eq!(reply["id"], Value::Null);
    // JSON that is not a message: InvalidRequest (-32600).
    client.send_raw(b"[1, 2, 3]");
    let reply = client.next();
    assert_eq!(reply["error"]["code"], -32600, "{reply}");

    client.initialize();
    // An unknown method: MethodNotFound (-32601).
    let reply = client.request("textDocument/rename", json!({}));
    assert_eq!(reply["error"]["code"], -32601, "{reply}");
    // Parameters of the wrong shape: InvalidParams (-32602).
    let reply = client.request("textDocument/hover", json!({"textDocument": 3}));
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    // A document that is not open.
    let reply = client.request(
        "textDocument/definition",
        json!({"textDocument": {"uri": "file:///nowhere/x.writ"}, "position": at(0, 0)}),
    );
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    // An untitled document, positions past its end, text that does not lex.
    let doc = "untitled:Untitled-1";
    client.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": doc, "languageId": "writ", "version": 1, "text": "permit if \"\u{e9}\u{1F600} #"}}),
    );
    let diagnostics = client.diagnostics(doc);
    assert!(!diagnostics.is_empty());
    for method in [
        "textDocument/hover",
        "textDocument/definition",
        "textDocument/completion",
    ] {
        let reply = client.request(
            method,
            json!({"textDocument": {"uri": doc}, "position": at(90, 90)}),
        );
        assert!(reply.get("error").is_none(), "{method}: {reply}");
    }
    let reply = client.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": doc}, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    assert_eq!(reply["error"]["code"], -32803, "{reply}");
    // A notification with bad parameters is ignored; the server still answers.
    client.notify("textDocument/didChange", json!({"nonsense": true}));
    let reply = client.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": doc}}),
    );
    assert_eq!(reply["result"], json!([]), "{reply}");

    assert_eq!(client.finish(), Some(0));
    let stderr = client.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn exit_without_shutdown_and_a_broken_header_end_with_code_1() {
    let mut client = Client::start();
    client.initialize();
    client.notify("exit", Value::Null);
    assert_eq!(client.wait(), Some(1));

    let mut client = Client::start();
    client.send_raw(b"{}");
    client
        .stdin
        .write_all(b"Content-Length: 99999999999\r\n\r\n")
        .expect("write");
    let _ = client.stdin.flush();
    // The first frame was fine (answered), the second is refused whole.
    let reply = client.next();
    assert_eq!(reply["error"]["code"], -32600, "{reply}");
    assert_eq!(client.wait(), Some(1));
    let stderr = client.stderr();
    assert!(stderr.contains("larger than"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn declared_attributes_have_hover_definition_and_completion() {
    let dir = TempDir::new("lsp-declared");
    let declarations = "attribute subject.repository: string \"the GitHub repository, owner/name\";\nattribute context.pipeline.protected: bool \"the branch is protected\";\n";
    std::fs::write(dir.file("attributes.writ"), declarations).expect("write attributes.writ");
    let path = dir.file("rules.writ");
    let text = "@id(\"ci\")\npermit if subject.repository == \"acme/api\" and context.pipeline.protected == true;\npermit if context.pipeline.\n";
    std::fs::write(&path, text).expect("write rules.writ");
    let doc = uri(&path);
    let declared_in = uri(&dir.file("attributes.writ"));

    let mut client = Client::start();
    client.initialize();
    client.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": doc, "languageId": "writ", "version": 1, "text": text}}),
    );
    let _ = client.diagnostics(&doc);
    let document = json!({"uri": doc});

    let reply = client.request(
        "textDocument/hover",
        json!({"textDocument": document, "position": at(1, 22)}),
    );
    let hover = reply["result"]["contents"]["value"].as_str().unwrap_or("");
    assert!(
        hover.contains("`subject.repository`: string (declared)"),
        "{reply}"
    );
    assert!(
        hover.contains("the GitHub repository, owner/name"),
        "{reply}"
    );
    assert!(hover.contains("attributes.writ:1"), "{reply}");

    // `protected` (line 1) is declared on line 2 of the other file.
    let column = text
        .lines()
        .nth(1)
        .and_then(|l| l.find("protected"))
        .unwrap_or(0) as u32;
    let reply = client.request(
        "textDocument/definition",
        json!({"textDocument": document, "position": at(1, column + 2)}),
    );
    assert_eq!(
        reply["result"],
        json!({"uri": declared_in, "range": {"start": at(1, 10), "end": at(1, 36)}}),
        "{reply}"
    );

    let complete = |client: &mut Client, line: u32, character: u32| -> Vec<(String, String)> {
        let reply = client.request(
            "textDocument/completion",
            json!({"textDocument": document, "position": at(line, character)}),
        );
        reply["result"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| {
                        (
                            i["label"].as_str().unwrap_or("").to_owned(),
                            i["detail"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let after_pipeline = complete(&mut client, 2, 27);
    assert_eq!(
        after_pipeline,
        [("protected".to_owned(), "bool (declared)".to_owned())],
        "{after_pipeline:?}"
    );
    let after_context = complete(&mut client, 2, 18);
    assert!(
        after_context.contains(&("pipeline".to_owned(), "declared below".to_owned())),
        "{after_context:?}"
    );
    let after_subject = complete(&mut client, 1, 18);
    assert!(
        after_subject.contains(&("repository".to_owned(), "string (declared)".to_owned())),
        "{after_subject:?}"
    );
    assert!(
        after_subject.contains(&("kind".to_owned(), "string".to_owned())),
        "{after_subject:?}"
    );
    assert_eq!(client.finish(), Some(0));
}
