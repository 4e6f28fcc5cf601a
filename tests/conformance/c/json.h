/*
 * json.h — a small JSON reader and writer for the conformance testee.
 *
 * Parses a whole document into a tree of json_value nodes (RFC 8259: objects,
 * arrays, strings with every escape including surrogate pairs, numbers as
 * double, true/false/null). Strings are NUL-terminated UTF-8 copies. Object
 * members keep their order; lookup is linear (scenarios are small).
 * No external dependencies; not thread-safe only in the sense that a tree
 * must not be freed while another thread reads it.
 */
#ifndef CONFORMANCE_JSON_H
#define CONFORMANCE_JSON_H

#include <stddef.h>
#include <stdio.h>

typedef enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value json_value;

typedef struct json_member {
  char *key;
  json_value *value;
} json_member;

struct json_value {
  json_type type;
  int boolean;   /* JSON_BOOL */
  double number; /* JSON_NUMBER */
  char *string;  /* JSON_STRING (NUL-terminated) */
  size_t count;  /* JSON_ARRAY: items, JSON_OBJECT: members */
  json_value **items;
  json_member *members;
};

/* Parse `len` bytes of `text`. Returns the root or NULL; on error writes a
 * message with the byte offset into err (if non-NULL). */
json_value *json_parse(const char *text, size_t len, char *err, size_t errlen);

/* Read and parse a whole file. Returns NULL on error (message in err). */
json_value *json_parse_file(const char *path, char *err, size_t errlen);

/* Free a tree returned by json_parse (NULL is fine). */
void json_free(json_value *v);

/* The member `key` of an object, or NULL (also for a non-object). */
const json_value *json_get(const json_value *obj, const char *key);

/* Write `v` compactly (no spaces) / a string with JSON escapes. */
void json_write(FILE *f, const json_value *v);
void json_write_string(FILE *f, const char *s);

#endif
