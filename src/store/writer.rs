//! Group commit: many concurrent writers, one transaction per batch.
//!
//! Workers hand their writes (a grant to record, a final state to store) to a [`BatchWriter`]
//! and await the outcome. One task takes whatever has queued up while the previous transaction
//! was in flight and writes it in a single transaction, so under load a write costs a fraction
//! of a round trip; with no load a batch is one item and the latency is one transaction.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

type Reply<R> = oneshot::Sender<Result<R>>;

/// A handle to a group-commit task writing items of type `T`, answering each with an `R`.
pub struct BatchWriter<T, R = bool> {
    tx: mpsc::UnboundedSender<(T, Reply<R>)>,
}

impl<T, R> Clone for BatchWriter<T, R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> BatchWriter<T, R> {
    /// Spawns the writer task. `write` stores a batch in one transaction and returns one answer
    /// per item, in order (e.g. whether it was written). The task ends when every handle is
    /// dropped.
    pub fn spawn<F, Fut>(max_batch: usize, write: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(T, Reply<R>)>();
        let max_batch = max_batch.max(1);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut items = vec![first];
                while items.len() < max_batch {
                    match rx.try_recv() {
                        Ok(item) => items.push(item),
                        Err(_) => break,
                    }
                }
                let (batch, replies): (Vec<T>, Vec<Reply<R>>) = items.into_iter().unzip();
                match write(batch).await {
                    Ok(answers) if answers.len() == replies.len() => {
                        for (reply, a) in replies.into_iter().zip(answers) {
                            let _ = reply.send(Ok(a));
                        }
                    }
                    Ok(answers) => {
                        let msg =
                            format!("a batch of {} got {} answers", replies.len(), answers.len());
                        tracing::error!("{msg}");
                        for reply in replies {
                            let _ = reply.send(Err(Error::Internal(msg.clone())));
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        for reply in replies {
                            let _ = reply.send(Err(Error::Storage(msg.clone())));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Queues one item and waits until its batch is committed.
    pub async fn write(&self, item: T) -> Result<R> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((item, reply))
            .map_err(|_| Error::Unavailable("the store writer has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("the store writer has stopped".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn concurrent_writes_are_committed_in_few_batches_and_each_gets_its_answer() {
        let batches = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let seen = batches.clone();
        let w = BatchWriter::spawn(64, move |items: Vec<u32>| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                let out = items.iter().map(|i| i % 2 == 0).collect();
                seen.lock().unwrap().push(items);
                Ok(out)
            }
        });
        let handles: Vec<_> = (0..200u32)
            .map(|i| {
                let w = w.clone();
                tokio::spawn(async move { (i, w.write(i).await.unwrap()) })
            })
            .collect();
        for h in handles {
            let (i, written) = h.await.unwrap();
            assert_eq!(written, i % 2 == 0);
        }
        let batches = batches.lock().unwrap();
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 200);
        assert!(batches.len() < 200, "writes were not grouped");
        assert!(batches.iter().all(|b| b.len() <= 64));
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_write_in_it() {
        let w = BatchWriter::spawn(8, |_items: Vec<u32>| async {
            Err::<Vec<bool>, _>(Error::Storage("disk full".into()))
        });
        let e = w.write(1).await.unwrap_err();
        assert!(e.to_string().contains("disk full"));
    }
}
