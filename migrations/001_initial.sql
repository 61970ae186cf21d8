-- Unilingo's tables in Supabase's PostgreSQL, along Unilingo v1's names (esp_lessons,
-- lesson_vocab, audio_lessons, users, usage). Every row a job writes carries the job's id
-- under a UNIQUE constraint: a retried or re-delivered job writes once
-- (INSERT ... ON CONFLICT (job_id) DO NOTHING).

-- One row per Supabase user (the JWT's "sub"), created on the user's first job.
CREATE TABLE users (
    id           text PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);

-- Generated lessons (outline and exercises); their vocabulary is in lesson_vocab.
CREATE TABLE esp_lessons (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      text NOT NULL UNIQUE,
    user_id     text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    topic       text NOT NULL,
    level       text,
    language    text,
    title       text NOT NULL,
    objectives  jsonb NOT NULL DEFAULT '[]'::jsonb,
    sections    jsonb NOT NULL DEFAULT '[]'::jsonb,
    exercises   jsonb NOT NULL DEFAULT '[]'::jsonb,
    cache_hit   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX esp_lessons_user_created ON esp_lessons (user_id, created_at DESC);

CREATE TABLE lesson_vocab (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lesson_id    bigint NOT NULL REFERENCES esp_lessons (id) ON DELETE CASCADE,
    position     integer NOT NULL CHECK (position >= 0),
    term         text NOT NULL,
    translation  text,
    example      text,
    UNIQUE (lesson_id, position)
);

-- Flashcard sets, the cards as a JSON array of {front, back}.
CREATE TABLE flashcard_sets (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      text NOT NULL UNIQUE,
    user_id     text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    subject     text,
    language    text,
    cards       jsonb NOT NULL,
    card_count  integer NOT NULL CHECK (card_count >= 0),
    cache_hit   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX flashcard_sets_user_created ON flashcard_sets (user_id, created_at DESC);

-- Generated audio: where the file is kept (bucket/key) and the last URL handed out.
CREATE TABLE audio_lessons (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id          text NOT NULL UNIQUE,
    user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    text            text NOT NULL,
    language        text,
    voice           text,
    storage_bucket  text NOT NULL,
    storage_key     text NOT NULL,
    audio_url       text,
    content_type    text,
    characters      integer,
    cache_hit       boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audio_lessons_user_created ON audio_lessons (user_id, created_at DESC);

-- What each job cost: provider units (OpenAI tokens, Polly characters...) per provider.
-- A cache hit is recorded too, with no units: what the cache saved.
CREATE TABLE usage (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      text NOT NULL UNIQUE,
    user_id     text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    job_type    text NOT NULL,
    providers   jsonb NOT NULL DEFAULT '{}'::jsonb,
    tokens      bigint NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    cache_hit   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_user_created ON usage (user_id, created_at DESC);
