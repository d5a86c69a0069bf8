//! A minimal STOMP 1.2 client on Berth's own codec; speaks to any STOMP broker.

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use berth_server::stomp::frame::{Frame, FrameCodec, Inbound, Limits, Outbound, Version};

pub(crate) struct StompClient {
    framed: Framed<TcpStream, FrameCodec>,
}

impl StompClient {
    pub(crate) async fn connect(addr: &str, login: &str, passcode: &str, vhost: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        // Brokers' frames may be larger than what Berth accepts from clients.
        let limits = Limits { max_frame_bytes: 16 << 20, max_headers: 256, max_body_bytes: 16 << 20 };
        let mut framed = Framed::new(stream, FrameCodec::new(limits));
        let connect = Frame::new("CONNECT")
            .header("accept-version", "1.2")
            .header("host", vhost)
            .header("login", login)
            .header("passcode", passcode)
            .header("heart-beat", "0,0");
        framed.send(Outbound::Frame(connect)).await?;
        let reply = next_frame(&mut framed).await?;
        if reply.command != "CONNECTED" {
            bail!("connect refused: {:?} {}", reply.get("message"), String::from_utf8_lossy(&reply.body));
        }
        framed.codec_mut().version = Version::V1_2;
        Ok(StompClient { framed })
    }

    /// SEND, persistent, asking for RECEIPT `receipt`; does not wait for it.
    pub(crate) async fn send(&mut self, destination: &str, body: &str, receipt: u64) -> anyhow::Result<()> {
        let frame = Frame::new("SEND")
            .header("destination", destination)
            .header("persistent", "true")
            .header("receipt", receipt.to_string())
            .body(body.as_bytes().to_vec());
        Ok(self.framed.send(Outbound::Frame(frame)).await?)
    }

    /// The next RECEIPT's id.
    pub(crate) async fn receipt(&mut self) -> anyhow::Result<u64> {
        let reply = self.next().await?;
        if reply.command != "RECEIPT" {
            bail!("expected a RECEIPT, got {}", reply.command);
        }
        reply.get("receipt-id").and_then(|id| id.parse().ok()).context("RECEIPT without a numeric receipt-id")
    }

    pub(crate) async fn subscribe(&mut self, destination: &str, prefetch: u32, visibility: u32) -> anyhow::Result<()> {
        let frame = Frame::new("SUBSCRIBE")
            .header("id", "0")
            .header("destination", destination)
            .header("ack", "client-individual")
            .header("prefetch", prefetch.to_string())
            .header("prefetch-count", prefetch.to_string())
            .header("visibility", visibility.to_string());
        Ok(self.framed.send(Outbound::Frame(frame)).await?)
    }

    pub(crate) async fn ack(&mut self, id: &str) -> anyhow::Result<()> {
        Ok(self.framed.send(Outbound::Frame(Frame::new("ACK").header("id", id))).await?)
    }

    pub(crate) async fn next(&mut self) -> anyhow::Result<Frame> {
        next_frame(&mut self.framed).await
    }
}

async fn next_frame(framed: &mut Framed<TcpStream, FrameCodec>) -> anyhow::Result<Frame> {
    loop {
        match framed.next().await {
            Some(Ok(Inbound::Frame(frame))) if frame.command == "ERROR" => {
                bail!("ERROR frame: {:?} {}", frame.get("message"), String::from_utf8_lossy(&frame.body))
            }
            Some(Ok(Inbound::Frame(frame))) => return Ok(frame),
            Some(Ok(Inbound::Heartbeat)) => continue,
            Some(Err(e)) => bail!("bad frame: {e}"),
            None => bail!("connection closed"),
        }
    }
}
