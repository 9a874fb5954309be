-- A key may limit tokens per rate_limit_period beside requests (NULL: tokens not limited).
ALTER TABLE provider_keys ADD COLUMN token_limit bigint CHECK (token_limit >= 1);
