//! `impl Host` of the WIT `store` interface over a call's [`CallStore`].

use std::ops::Bound;

use super::{CallStore, Op, db, parse_counter, read_failure};
use crate::runtime::interfaces::store::{Bounds, Host, IncrementError};
use crate::runtime::{LimitExceeded, Metered};

impl Host for Metered<'_, CallStore> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let this = self.charge()?;
        this.check_key(&key)?;
        Ok(this.current(key.as_bytes()).await?)
    }

    async fn get_many(&mut self, keys: Vec<String>) -> wasmtime::Result<Vec<Option<Vec<u8>>>> {
        let this = self.charge_for(keys.len() as u64)?;
        for key in &keys {
            this.check_key(key)?;
        }
        let keys: Vec<Vec<u8>> = keys.into_iter().map(String::into_bytes).collect();
        this.load(&keys).await?;
        let seen = |key: &Vec<u8>| this.view.get(key).and_then(Option::as_ref);
        // Checked before copying: the answer must fit in the call's memory.
        let max = this.limits().read_bytes_max;
        let bytes: u64 = keys.iter().filter_map(seen).map(|v| v.len() as u64).sum();
        if bytes > max {
            return Err(LimitExceeded::Memory(max).into());
        }
        Ok(keys.iter().map(|key| seen(key).cloned()).collect())
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        let this = self.charge()?;
        this.check_key(&key)?;
        this.check_value(&value)?;
        let key = key.into_bytes();
        this.see(key.clone(), Some(value.clone())).await?;
        this.ops.push(Op::Put { key, value });
        Ok(())
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<bool> {
        let this = self.charge()?;
        this.check_key(&key)?;
        let key = key.into_bytes();
        let existed = this.current(&key).await?.is_some();
        if existed {
            this.see(key.clone(), None).await?;
            this.ops.push(Op::Delete { key });
        }
        Ok(existed)
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Vec<String>> {
        let this = self.charge()?;
        this.check_key(&prefix)?;
        let limit = u64::from(limit).min(this.limits().list_keys_max) as usize;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let prefix = prefix.into_bytes();
        // Keys strictly after `after` are the keys at or after `after` + NUL.
        let mut from = prefix.clone();
        if let Some(after) = after {
            let mut after = after.into_bytes();
            after.push(0);
            from = from.max(after);
        }
        let to = prefix_end(&prefix);
        let in_range = |key: &Vec<u8>| key.starts_with(&prefix) && *key >= from;
        // Keys this call deleted may come back from the database; ask for that many more.
        let deleted_here = this
            .view
            .iter()
            .filter(|(key, value)| value.is_none() && in_range(key))
            .count();
        let (mut connection, scope) = this.reader().await?;
        let stored = db::keys(
            connection.conn(),
            scope,
            &from,
            to.as_deref(),
            (limit + deleted_here) as i64,
        )
        .await
        .map_err(read_failure)?;
        let upper = match &to {
            Some(end) => Bound::Excluded(end.clone()),
            None => Bound::Unbounded,
        };
        let mut keys: Vec<Vec<u8>> = stored
            .into_iter()
            .filter(|key| !this.view.contains_key(key))
            .chain(
                this.view
                    .range((Bound::Included(from.clone()), upper))
                    .filter(|(_, value)| value.is_some())
                    .map(|(key, _)| key.clone()),
            )
            .collect();
        keys.sort();
        keys.truncate(limit);
        Ok(keys
            .into_iter()
            .map(|key| String::from_utf8_lossy(&key).into_owned())
            .collect())
    }

    async fn increment(
        &mut self,
        key: String,
        delta: i64,
        bounds: Bounds,
    ) -> wasmtime::Result<Result<i64, IncrementError>> {
        let this = self.charge()?;
        this.check_key(&key)?;
        let key = key.into_bytes();
        let current = this.current(&key).await?;
        let Some(value) = parse_counter(current.as_deref()) else {
            return Ok(Err(IncrementError::NotACounter));
        };
        let new = match value.checked_add(delta) {
            Some(new) if new >= bounds.min && new <= bounds.max => new,
            _ => return Ok(Err(IncrementError::OutOfBounds(value))),
        };
        this.see(key.clone(), Some(new.to_string().into_bytes()))
            .await?;
        this.ops.push(Op::Increment {
            key,
            delta,
            min: bounds.min,
            max: bounds.max,
        });
        Ok(Ok(new))
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> wasmtime::Result<bool> {
        let this = self.charge()?;
        this.check_key(&key)?;
        if let Some(value) = &new {
            this.check_value(value)?;
        }
        let key = key.into_bytes();
        if this.current(&key).await? != expected {
            return Ok(false);
        }
        this.see(key.clone(), new.clone()).await?;
        this.ops.push(Op::CompareAndSwap { key, expected, new });
        Ok(true)
    }
}

/// The smallest byte string greater than every string that starts with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_string_past_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
