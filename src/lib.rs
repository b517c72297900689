//! writ: policy-as-code for issuing short-lived credentials.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ast;
pub mod diagnostics;
pub mod lexer;
pub mod parser;
pub mod source;
