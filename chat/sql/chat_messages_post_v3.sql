-- chat_messages_post, version 3: store a batch of chat messages in one statement.
--
-- Called by chat.services.messages.messages_store, for one message (the one-message path) or
-- many (the sockets' group commit, chat.writer). Loaded by migration
-- chat/0015_messages_post_function_v3; version 2 is chat_messages_post_v2.sql (migration 0014),
-- version 1 was written inline in chat/0006. A later version is a new file
-- (chat_messages_post_v4.sql) and a new migration that loads it; this file stays as it is, for
-- the migrations that load it.
--
-- The function checks the conditions each message carries and decides nothing of its own: the
-- states an author may post in, the owner, the holder and the channel all come from
-- chat/services/post_rules.py (PostRequest). Message i takes the next seq of its conversation
-- under the conversation's row lock unless
--   * the conversation is not in one of p_states[i] (a comma-separated list),
--   * p_shopper[i] is set and the conversation is someone else's,
--   * p_holder[i] is set and the conversation is not assigned to that agent,
--   * p_channel[i] is set and the conversation is on another channel,
--   * p_client_id[i] is already stored in the conversation (a resend);
-- such a message returns a row of NULLs besides r_index, and the caller finds out why
-- (post_rules.post_rejected). Rows come back with r_index, the message's place in the arrays.
--
-- What changed from version 2: a message with a client id first takes the conversation's row
-- lock (SELECT ... FOR UPDATE) in a statement of its own, and only then checks its client id and
-- counts its seq. In version 2 the check ran in the statement that waited for the lock, with that
-- statement's snapshot: two transactions resending one client id at once both found it absent,
-- the second bumped last_seq after the first committed, then its insert met the unique index
-- (ON CONFLICT DO NOTHING) and left a gap in the seqs. A VOLATILE PL/pgSQL function takes a new
-- snapshot per statement (READ COMMITTED), so the check after the lock sees every message a
-- transaction that held the lock committed. Messages without a client id cannot be resends and
-- skip the extra lookup.
--
-- A batch is one transaction (outside an explicit one), one round trip and one WAL flush however
-- many messages it holds; PL/pgSQL caches the plan of the loop's statements per session. Callers
-- pass conversations in ascending id order, so that two batches lock rows in the same order.
--
-- Same signature as versions 1 and 2, so CREATE OR REPLACE keeps every grant and caller.
CREATE OR REPLACE FUNCTION chat_messages_post(
    p_now timestamptz,
    p_cid bigint[],
    p_states text[],
    p_client_id text[],
    p_kind text[],
    p_agent integer[],
    p_body text[],
    p_internal boolean[],
    p_intent text[],
    p_first_response boolean[],
    p_shopper bigint[],
    p_holder integer[],
    p_channel text[]
) RETURNS TABLE (r_index integer, r_id bigint, r_seq integer, r_state text, r_channel text)
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_cid, 1), 0) LOOP
        r_index := i;
        r_id := NULL;
        r_seq := NULL;
        r_state := NULL;
        r_channel := NULL;
        IF p_client_id[i] IS NOT NULL THEN
            PERFORM 1 FROM chat_conversation WHERE id = p_cid[i] FOR UPDATE;
        END IF;
        WITH c AS (
            UPDATE chat_conversation AS conv
               SET last_seq = conv.last_seq + 1,
                   updated_at = p_now,
                   first_agent_response_at = CASE
                       WHEN p_first_response[i] THEN COALESCE(conv.first_agent_response_at, p_now)
                       ELSE conv.first_agent_response_at END
             WHERE conv.id = p_cid[i]
               AND conv.state = ANY(string_to_array(p_states[i], ','))
               AND (p_shopper[i] IS NULL OR conv.shopper_id = p_shopper[i])
               AND (p_holder[i] IS NULL OR conv.assigned_agent_id = p_holder[i])
               AND (p_channel[i] IS NULL OR conv.channel = p_channel[i])
               AND NOT EXISTS (
                   SELECT 1 FROM chat_message m
                    WHERE m.conversation_id = p_cid[i] AND m.client_id = p_client_id[i])
         RETURNING conv.id, conv.last_seq, conv.state, conv.channel
        )
        INSERT INTO chat_message AS m
               (conversation_id, seq, author_kind, author_agent_id, body, internal, client_id,
                intent, created_at)
        SELECT c.id, c.last_seq, p_kind[i], p_agent[i], p_body[i], p_internal[i], p_client_id[i],
               p_intent[i], p_now
          FROM c
        ON CONFLICT (conversation_id, client_id) WHERE client_id IS NOT NULL DO NOTHING
        RETURNING m.id, m.seq, (SELECT c.state FROM c), (SELECT c.channel FROM c)
        INTO r_id, r_seq, r_state, r_channel;
        RETURN NEXT;
    END LOOP;
END
$$;
