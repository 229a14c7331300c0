drop function sync.apply_batch(text, regclass, jsonb, text, jsonb, text, jsonb, uuid, text, char,
                               int, text);
