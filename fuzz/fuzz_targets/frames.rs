//! The framing every incoming message goes through ([`kit::framing`]), on arbitrary bytes:
//! - as one HTTP body: [`kit::framing::diagnose`] says it is a message, or gives a JSON-RPC error
//!   whose shape is checked here (a known code, an `id` that is `null`, a string or an integer);
//! - as a stdio stream: [`kit::framing::transport`] reads it line by line, with a small line
//!   limit so oversized lines are exercised too, until EOF; each request it could not type goes
//!   through [`kit::framing::custom_request_error`].
//!
//! Never a panic, never a hang (the stream must end at EOF).
#![no_main]

use std::sync::OnceLock;

use futures::StreamExt;
use kit::framing;
use libfuzzer_sys::fuzz_target;
use rmcp::model::{ClientRequest, JsonRpcMessage};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Some(answer) = framing::diagnose(data) {
        assert_eq!(answer["jsonrpc"], "2.0", "{answer}");
        let code = answer["error"]["code"].as_i64();
        assert!(
            matches!(
                code,
                Some(
                    framing::PARSE_ERROR
                        | framing::INVALID_REQUEST
                        | framing::METHOD_NOT_FOUND
                        | framing::INVALID_PARAMS
                )
            ),
            "{answer}"
        );
        assert!(answer["error"]["message"].is_string(), "{answer}");
        let id = answer
            .get("id")
            .expect("an error response always has an id");
        assert!(
            id.is_null() || id.is_string() || id.is_i64() || id.is_u64(),
            "{answer}"
        );
    }

    let max_line = 16 + 4 * usize::from(data.first().copied().unwrap_or(0));
    let input = std::io::Cursor::new(data.to_vec());
    let messages = runtime().block_on(async move {
        let (_sink, stream) = framing::transport(input, tokio::io::sink(), max_line);
        stream.collect::<Vec<_>>().await
    });
    for message in messages {
        if let JsonRpcMessage::Request(request) = message
            && let ClientRequest::CustomRequest(custom) = &request.request
        {
            let _ = framing::custom_request_error(custom);
        }
    }
});
