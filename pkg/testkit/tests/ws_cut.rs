//! `Script::cut_binary`: the client gets a frame cut in the middle and then
//! the end of the connection; the next connection plays the next part.
#![allow(clippy::unwrap_used)] // a panic is the failure report

use futures_util::StreamExt;
use skyhouse_testkit::ws::{serve, Script};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_cut_frame_ends_the_connection_mid_message() {
    let server = serve(
        Script::new()
            .text("before")
            .cut_binary(vec![7u8; 1000], 300)
            .text("next connection"),
    )
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));
    // 300 of the frame's 1004 bytes, then the socket closes: an error, never
    // a message.
    match ws.next().await {
        Some(Err(_)) | None => {}
        Some(Ok(m)) => panic!("a cut frame came through as {m:?}"),
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("next connection")
    );
    assert_eq!(server.connections(), 2);
    assert_eq!(server.sent(), 2, "the cut message is not counted as sent");
}
