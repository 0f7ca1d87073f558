//! Writes sent ahead: a PostgreSQL transaction's held rows (`store/deferred.rs`) written on a
//! thread of their own while the writer builds the command's next rows. A cascade of 100,000
//! sessions builds and hashes its events while PostgreSQL writes the chunk before.
//!
//! At most one write is ahead, and it holds the connection's client: every use of the client
//! waits for it first ([`PgConn::settle`], called by each statement), so the transaction's
//! statements still run one after another, in the order they were issued. A failed write is the
//! error of the next statement, which is not run: the COMMIT included, so a batch whose write
//! failed never commits (PostgreSQL answers a COMMIT in a failed transaction with a rollback).

use crate::domain::{Error, Result};
use crate::store::conn::{DbError, DbResult, PgClient, PgConn};

/// A write sent ahead ([`PgConn::send_ahead`]): its thread gives the client back with the
/// outcome (`None` if it was never handed the client). Boxed: a connection holds one only while a
/// cascade writes.
pub struct Behind(Box<std::thread::JoinHandle<Option<Written>>>);

/// The client, given back, and how the write went.
type Written = (PgClient, Result<()>);

/// A write to run with the client on a thread of its own.
pub type WriteAhead = Box<dyn FnOnce(&mut PgClient) -> Result<()> + Send>;

impl PgConn {
    /// Runs `write` with the client on a thread of its own; the next use of the client waits for
    /// it. If no thread can be started, it runs now.
    pub fn send_ahead(&self, write: WriteAhead) -> DbResult<()> {
        self.settle()?;
        let Some(client) = self.client.borrow_mut().0.take() else {
            return Err(DbError::WrittenAhead(Box::new(Error::internal("the connection has no client"))));
        };
        // The thread starts before it is handed the client: if it cannot start, nothing is lost.
        let (hand_over, receive) = std::sync::mpsc::channel::<(PgClient, WriteAhead)>();
        let started = std::thread::Builder::new().name("pg-write-ahead".into()).spawn(move || {
            let (mut client, write) = receive.recv().ok()?;
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(&mut client)))
                .unwrap_or_else(|_| Err(Error::internal("a write sent ahead panicked")));
            Some((client, written))
        });
        let (mut client, write) = match started {
            Ok(thread) => match hand_over.send((client, write)) {
                Ok(()) => {
                    *self.behind.borrow_mut() = Some(Behind(Box::new(thread)));
                    return Ok(());
                }
                Err(std::sync::mpsc::SendError(back)) => back,
            },
            Err(_) => (client, write),
        };
        let written = write(&mut client);
        self.client.borrow_mut().0 = Some(client);
        written.map_err(|e| DbError::WrittenAhead(Box::new(e)))
    }

    /// Waits for the write sent ahead, if any, and puts the client back; its failure is the error.
    pub fn settle(&self) -> DbResult<()> {
        let Some(Behind(thread)) = self.behind.borrow_mut().take() else { return Ok(()) };
        match thread.join() {
            Ok(Some((client, written))) => {
                self.client.borrow_mut().0 = Some(client);
                written.map_err(|e| DbError::WrittenAhead(Box::new(e)))
            }
            // The thread catches its write's panic and is always handed the client: neither
            // happens, and a connection without its client reports itself closed.
            _ => Err(DbError::WrittenAhead(Box::new(Error::internal("a write sent ahead lost its connection")))),
        }
    }
}
