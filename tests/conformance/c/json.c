/*
 * json.c — recursive-descent JSON parser and compact writer.
 *
 * The parser keeps a cursor into the input and builds nodes as it goes; on
 * the first error it records a message and unwinds, freeing what was built.
 * Nesting is limited (JSON_MAX_DEPTH) so a hostile file cannot overflow the
 * C stack.
 */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 200

typedef struct parser {
  const char *p, *start, *end;
  char *err;
  size_t errlen;
  int failed;
} parser;

static void fail(parser *ps, const char *fmt, ...) {
  if (ps->failed) return;
  ps->failed = 1;
  if (ps->err && ps->errlen) {
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(ps->err, ps->errlen, "JSON error at byte %zu: %s", (size_t)(ps->p - ps->start), msg);
  }
}

static void skip_ws(parser *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
    ps->p++;
}

static json_value *new_value(parser *ps, json_type type) {
  json_value *v = calloc(1, sizeof *v);
  if (!v)
    fail(ps, "out of memory");
  else
    v->type = type;
  return v;
}

static int literal(parser *ps, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, word, n) == 0) {
    ps->p += n;
    return 1;
  }
  return 0;
}

static int hex4(parser *ps, unsigned *out) {
  unsigned v = 0;
  if (ps->end - ps->p < 4) {
    fail(ps, "truncated \\u escape");
    return 0;
  }
  for (int i = 0; i < 4; i++) {
    char c = *ps->p++;
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      v |= (unsigned)(c - 'A' + 10);
    else {
      fail(ps, "bad hex digit in \\u escape");
      return 0;
    }
  }
  *out = v;
  return 1;
}

static size_t put_utf8(char *dst, unsigned cp) {
  if (cp < 0x80) {
    dst[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    dst[0] = (char)(0xC0 | (cp >> 6));
    dst[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    dst[0] = (char)(0xE0 | (cp >> 12));
    dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    dst[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  dst[0] = (char)(0xF0 | (cp >> 18));
  dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  dst[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Parses a string starting at the opening quote. The decoded text is never
 * longer than the source text, so one allocation of the source length is
 * enough. */
static char *parse_string_raw(parser *ps) {
  const char *q = ++ps->p; /* after the quote */
  while (q < ps->end && *q != '"') {
    if (*q == '\\') q++;
    q++;
  }
  if (q >= ps->end) {
    fail(ps, "unterminated string");
    return NULL;
  }
  char *out = malloc((size_t)(q - ps->p) + 1);
  if (!out) {
    fail(ps, "out of memory");
    return NULL;
  }
  size_t n = 0;
  while (*ps->p != '"') {
    unsigned char c = (unsigned char)*ps->p++;
    if (c < 0x20) {
      fail(ps, "control character in string");
      free(out);
      return NULL;
    }
    if (c != '\\') {
      out[n++] = (char)c;
      continue;
    }
    char e = *ps->p++;
    switch (e) {
    case '"':
    case '\\':
    case '/':
      out[n++] = e;
      break;
    case 'b':
      out[n++] = '\b';
      break;
    case 'f':
      out[n++] = '\f';
      break;
    case 'n':
      out[n++] = '\n';
      break;
    case 'r':
      out[n++] = '\r';
      break;
    case 't':
      out[n++] = '\t';
      break;
    case 'u': {
      unsigned cp, lo;
      if (!hex4(ps, &cp)) {
        free(out);
        return NULL;
      }
      if (cp >= 0xD800 && cp < 0xDC00) {
        if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u') {
          fail(ps, "lone high surrogate");
          free(out);
          return NULL;
        }
        ps->p += 2;
        if (!hex4(ps, &lo)) {
          free(out);
          return NULL;
        }
        if (lo < 0xDC00 || lo > 0xDFFF) {
          fail(ps, "bad low surrogate");
          free(out);
          return NULL;
        }
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      } else if (cp >= 0xDC00 && cp < 0xE000) {
        fail(ps, "lone low surrogate");
        free(out);
        return NULL;
      }
      n += put_utf8(out + n, cp);
      break;
    }
    default:
      fail(ps, "bad escape \\%c", e);
      free(out);
      return NULL;
    }
  }
  ps->p++; /* closing quote */
  out[n] = '\0';
  return out;
}

static json_value *parse_value(parser *ps, int depth);

static json_value *parse_number(parser *ps) {
  const char *s = ps->p;
  if (ps->p < ps->end && *ps->p == '-') ps->p++;
  if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') {
    fail(ps, "bad number");
    return NULL;
  }
  if (*ps->p == '0')
    ps->p++;
  else
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
      ps->p++;
  if (ps->p < ps->end && *ps->p == '.') {
    ps->p++;
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') {
      fail(ps, "bad fraction");
      return NULL;
    }
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
      ps->p++;
  }
  if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
    ps->p++;
    if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) ps->p++;
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') {
      fail(ps, "bad exponent");
      return NULL;
    }
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
      ps->p++;
  }
  char buf[64];
  size_t n = (size_t)(ps->p - s);
  if (n >= sizeof buf) {
    fail(ps, "number too long");
    return NULL;
  }
  memcpy(buf, s, n);
  buf[n] = '\0';
  json_value *v = new_value(ps, JSON_NUMBER);
  if (v) v->number = strtod(buf, NULL);
  return v;
}

static json_value *parse_array(parser *ps, int depth) {
  json_value *v = new_value(ps, JSON_ARRAY);
  size_t cap = 0;
  if (!v) return NULL;
  ps->p++; /* [ */
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == ']') {
    ps->p++;
    return v;
  }
  for (;;) {
    json_value *item = parse_value(ps, depth + 1);
    if (!item) break;
    if (v->count == cap) {
      size_t ncap = cap ? cap * 2 : 4;
      json_value **ni = realloc(v->items, ncap * sizeof *ni);
      if (!ni) {
        json_free(item);
        fail(ps, "out of memory");
        break;
      }
      v->items = ni;
      cap = ncap;
    }
    v->items[v->count++] = item;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
      ps->p++;
      continue;
    }
    if (ps->p < ps->end && *ps->p == ']') {
      ps->p++;
      return v;
    }
    fail(ps, "expected ',' or ']'");
    break;
  }
  json_free(v);
  return NULL;
}

static json_value *parse_object(parser *ps, int depth) {
  json_value *v = new_value(ps, JSON_OBJECT);
  size_t cap = 0;
  if (!v) return NULL;
  ps->p++; /* { */
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == '}') {
    ps->p++;
    return v;
  }
  for (;;) {
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != '"') {
      fail(ps, "expected a string key");
      break;
    }
    char *key = parse_string_raw(ps);
    if (!key) break;
    if (json_get(v, key)) {
      fail(ps, "duplicate key \"%s\"", key);
      free(key);
      break;
    }
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != ':') {
      free(key);
      fail(ps, "expected ':'");
      break;
    }
    ps->p++;
    json_value *item = parse_value(ps, depth + 1);
    if (!item) {
      free(key);
      break;
    }
    if (v->count == cap) {
      size_t ncap = cap ? cap * 2 : 4;
      json_member *nm = realloc(v->members, ncap * sizeof *nm);
      if (!nm) {
        free(key);
        json_free(item);
        fail(ps, "out of memory");
        break;
      }
      v->members = nm;
      cap = ncap;
    }
    v->members[v->count].key = key;
    v->members[v->count].value = item;
    v->count++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
      ps->p++;
      continue;
    }
    if (ps->p < ps->end && *ps->p == '}') {
      ps->p++;
      return v;
    }
    fail(ps, "expected ',' or '}'");
    break;
  }
  json_free(v);
  return NULL;
}

static json_value *parse_value(parser *ps, int depth) {
  if (depth > JSON_MAX_DEPTH) {
    fail(ps, "nesting too deep");
    return NULL;
  }
  skip_ws(ps);
  if (ps->p >= ps->end) {
    fail(ps, "unexpected end of input");
    return NULL;
  }
  json_value *v;
  switch (*ps->p) {
  case '{':
    return parse_object(ps, depth);
  case '[':
    return parse_array(ps, depth);
  case '"': {
    char *s = parse_string_raw(ps);
    if (!s) return NULL;
    v = new_value(ps, JSON_STRING);
    if (!v) {
      free(s);
      return NULL;
    }
    v->string = s;
    return v;
  }
  case 't':
  case 'f':
    if (literal(ps, "true") || literal(ps, "false")) {
      v = new_value(ps, JSON_BOOL);
      if (v) v->boolean = ps->p[-4] == 't'; /* "true" vs "false": 4 back is 't' vs 'a' */
      return v;
    }
    break;
  case 'n':
    if (literal(ps, "null")) return new_value(ps, JSON_NULL);
    break;
  default:
    if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')) return parse_number(ps);
    break;
  }
  fail(ps, "unexpected character '%c'", *ps->p);
  return NULL;
}

json_value *json_parse(const char *text, size_t len, char *err, size_t errlen) {
  parser ps = {text, text, text + len, err, errlen, 0};
  if (err && errlen) err[0] = '\0';
  json_value *v = parse_value(&ps, 0);
  if (!v) return NULL;
  skip_ws(&ps);
  if (ps.p != ps.end) {
    fail(&ps, "trailing characters");
    json_free(v);
    return NULL;
  }
  return v;
}

json_value *json_parse_file(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (!buf) {
      fclose(f);
      snprintf(err, errlen, "out of memory");
      return NULL;
    }
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap) break;
    cap *= 2;
    char *nb = realloc(buf, cap);
    if (!nb) free(buf);
    buf = nb;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    snprintf(err, errlen, "cannot read %s", path);
    return NULL;
  }
  json_value *v = json_parse(buf, n, err, errlen);
  free(buf);
  return v;
}

void json_free(json_value *v) {
  if (!v) return;
  for (size_t i = 0; v->type == JSON_ARRAY && i < v->count; i++)
    json_free(v->items[i]);
  for (size_t i = 0; v->type == JSON_OBJECT && i < v->count; i++) {
    free(v->members[i].key);
    json_free(v->members[i].value);
  }
  free(v->items);
  free(v->members);
  free(v->string);
  free(v);
}

const json_value *json_get(const json_value *obj, const char *key) {
  if (!obj || obj->type != JSON_OBJECT) return NULL;
  for (size_t i = 0; i < obj->count; i++)
    if (strcmp(obj->members[i].key, key) == 0) return obj->members[i].value;
  return NULL;
}

void json_write_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"':
      fputs("\\\"", f);
      break;
    case '\\':
      fputs("\\\\", f);
      break;
    case '\n':
      fputs("\\n", f);
      break;
    case '\r':
      fputs("\\r", f);
      break;
    case '\t':
      fputs("\\t", f);
      break;
    default:
      if (*p < 0x20)
        fprintf(f, "\\u%04x", *p);
      else
        fputc(*p, f);
    }
  }
  fputc('"', f);
}

void json_write(FILE *f, const json_value *v) {
  switch (v->type) {
  case JSON_NULL:
    fputs("null", f);
    break;
  case JSON_BOOL:
    fputs(v->boolean ? "true" : "false", f);
    break;
  case JSON_NUMBER:
    if (isfinite(v->number) && v->number == (double)(long long)v->number && fabs(v->number) < 9.0e15)
      fprintf(f, "%lld", (long long)v->number);
    else
      fprintf(f, "%.17g", v->number);
    break;
  case JSON_STRING:
    json_write_string(f, v->string);
    break;
  case JSON_ARRAY:
    fputc('[', f);
    for (size_t i = 0; i < v->count; i++) {
      if (i) fputc(',', f);
      json_write(f, v->items[i]);
    }
    fputc(']', f);
    break;
  case JSON_OBJECT:
    fputc('{', f);
    for (size_t i = 0; i < v->count; i++) {
      if (i) fputc(',', f);
      json_write_string(f, v->members[i].key);
      fputc(':', f);
      json_write(f, v->members[i].value);
    }
    fputc('}', f);
    break;
  }
}
