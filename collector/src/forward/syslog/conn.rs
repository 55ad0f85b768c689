//! The byte stream to the syslog receiver (TLS, or plain TCP to loopback)
//! and the three checks that stand in for the acknowledgement syslog does
//! not have: is the peer still there before we write ([`Stream::probe`]),
//! and has its TCP acknowledged every byte we wrote ([`Stream::drain`]).

use std::{io, os::fd::AsRawFd as _, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// What a look at an idle connection found.
#[derive(Debug, PartialEq, Eq)]
pub enum Peer {
    /// Nothing to read: still connected as far as we can tell.
    Alive,
    /// The receiver closed the connection in order (FIN, TLS
    /// `close_notify`): it had read everything we sent (a socket closed
    /// with unread data answers with a reset instead).
    Closed,
    /// Reset, or closed in a way that may have discarded what we sent.
    Reset,
}

/// Why a write did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Broken {
    #[error("the receiver closed the connection while {unacked} bytes were unacknowledged")]
    Closed { unacked: usize },
    #[error("connection reset or failed")]
    Io(#[source] io::Error),
}

pub enum Stream {
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Tcp(TcpStream),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Tls(s) => s.get_ref().0,
            Self::Tcp(s) => s,
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Self::Tcp(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tls(s) => s.read(buf).await,
            Self::Tcp(s) => s.read(buf).await,
        }
    }

    /// Bytes written to the socket that the peer's TCP has not acknowledged
    /// yet (Linux `SIOCOUTQ`: `write_seq - snd_una`).
    fn unacked(&self) -> io::Result<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ on a socket) stores one c_int through
        // the pointer, which points at `n`; the descriptor is owned by the
        // TcpStream borrowed for the whole call.
        let r = unsafe { libc::ioctl(self.tcp().as_raw_fd(), libc::TIOCOUTQ, &raw mut n) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Looks at an idle connection without waiting. A syslog receiver
    /// sends nothing but TLS handshake messages (which rustls consumes), so
    /// application bytes are discarded; each read that returned some is
    /// counted in `unexpected`.
    pub async fn probe(&mut self, unexpected: &mut u64) -> Peer {
        let mut buf = [0u8; 1024];
        loop {
            // A zero timeout polls the read exactly once.
            match tokio::time::timeout(Duration::ZERO, self.read(&mut buf)).await {
                Err(_) => return Peer::Alive,
                Ok(Ok(0)) => return Peer::Closed,
                Ok(Ok(_)) => *unexpected += 1,
                // TLS without close_notify, then FIN: still an orderly close
                // of the TCP stream.
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Peer::Closed,
                Ok(Err(_)) => return Peer::Reset,
            }
        }
    }

    /// Waits until the peer's TCP has acknowledged every byte written,
    /// watching the connection meanwhile. The caller bounds the wait.
    pub async fn drain(&mut self, unexpected: &mut u64) -> Result<(), Broken> {
        let mut pause = Duration::from_millis(1);
        let mut buf = [0u8; 1024];
        loop {
            let unacked = self.unacked().map_err(Broken::Io)?;
            if unacked == 0 {
                return Ok(());
            }
            tokio::select! {
                r = self.read(&mut buf) => match r {
                    Ok(0) => return Err(Broken::Closed { unacked }),
                    Ok(_) => *unexpected += 1,
                    Err(e) => return Err(Broken::Io(e)),
                },
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}
