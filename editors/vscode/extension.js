// Starts `writ lsp` for .writ files. The server does the work; this only
// tells VS Code how to run it (settings `writ.path` and `writ.data`).
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration("writ");
  const command = config.get("path") || "writ";
  const data = config.get("data") || "";
  const serverOptions = {
    command,
    args: ["lsp"],
    transport: TransportKind.stdio,
  };
  const clientOptions = {
    documentSelector: [{ scheme: "file", language: "writ" }, { scheme: "untitled", language: "writ" }],
    initializationOptions: data ? { data } : {},
  };
  client = new LanguageClient("writ", "writ language server", serverOptions, clientOptions);
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration("writ")) {
        vscode.window.showInformationMessage("writ: reload the window to apply the new settings");
      }
    })
  );
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
