//! A fault-injection TCP proxy for one directed peer link: it forwards
//! bytes until the nemesis cuts it (live connections closed, new ones
//! refused) and forwards again once restored.

use std::net::SocketAddr;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// One directed link's proxy; dropping it stops accepting.
pub struct Proxy {
    /// Where the link's sender connects.
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, rx) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, target, rx));
        Ok(Proxy { addr, cut, accept })
    }

    /// Cuts the link: closes live connections and refuses new ones.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Restores the link.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, rx: watch::Receiver<bool>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        if *rx.borrow() {
            drop(inbound);
            continue;
        }
        let mut rx = rx.clone();
        tokio::spawn(async move {
            let Ok(Ok(mut outbound)) = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                TcpStream::connect(target),
            )
            .await
            else {
                return;
            };
            let mut inbound = inbound;
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            tokio::select! {
                _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = rx.wait_for(|cut| *cut) => {}
            }
        });
    }
}
