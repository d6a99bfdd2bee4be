/**
 * The JSON bodies served at /.well-known/matrix/client and /.well-known/matrix/support: any JSON,
 * with the keys the spec defines checked (m.homeserver.base_url; contacts and support_page).
 */
import { z } from 'zod';
import { by, byEach, httpUrl, isMap, NOT_PLAIN, plainMapOnly, type Says } from './leaves';
import { checkContact, checkSupport } from './rules';
import { isMatrixUserId } from './servername';
import { show } from './units';

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

const jsonSays: Says = (v) =>
  typeof v === 'number' ? `${show(v)} cannot be written in JSON; use a finite number or a string` : `${show(v)} cannot be written in JSON`;

/** Any value JSON can carry (no NaN, Infinity or binary). */
export const jsonValue: z.ZodType<JsonValue> = z
  .lazy(() =>
    z.union(
      [z.string(), z.number(), z.boolean(), z.null(), z.array(jsonValue), z.record(z.string(), jsonValue)],
      by(jsonSays),
    ),
  )
  .meta({ id: 'JsonValue', description: 'Any JSON value: served verbatim.' });

const urlSays: Says = (v) => `expected an http:// or https:// URL; got ${show(v)}`;

const homeserverSays: Says = (v) => `expected a map like { base_url: "https://matrix.example.com" }; got ${show(v)}`;

const clientSays: Says = (v) =>
  v === NOT_PLAIN ? 'a map cannot be written in JSON' : `expected a map of keys to add to /.well-known/matrix/client; got ${show(v)}`;

const homeserver = z
  .object(
    { base_url: httpUrl(urlSays).describe('Where clients reach the homeserver; default https://<hostname>[:<port>].').optional() },
    by(homeserverSays),
  )
  .catchall(jsonValue)
  .describe('The homeserver clients use; base_url defaults to this edge.');

const client = z.object({ 'm.homeserver': homeserver.optional() }, by(clientSays)).catchall(jsonValue);

/** `well_known.client`: extra keys of /.well-known/matrix/client, served verbatim. */
export const clientBody = z.preprocess(plainMapOnly, client.transform((v) => v as JsonObject));

const roleSays: Says = (v) =>
  v === undefined
    ? 'missing; give a role like m.role.admin or m.role.security'
    : `expected a role like m.role.admin or m.role.security; got ${show(v)}`;

const matrixIdSays: Says = (v) => `expected a Matrix user ID like @admin:example.com; got ${show(v)}`;

const emailSays: Says = (v) => `expected an email address like admin@example.com; got ${show(v)}`;

const contactSays: Says = (v) => `expected a map with role and matrix_id and/or email_address; got ${show(v)}`;

/** Runs even when a value of the map is invalid: it only looks at which keys are present. */
const whenMap = { when: (payload: { value: unknown }) => isMap(payload.value) };

const contact = z
  .object(
    {
      role: z.string(byEach(roleSays)).min(1, byEach(roleSays)).describe('m.role.admin, m.role.security or a namespaced role.'),
      matrix_id: z
        .string(byEach(matrixIdSays))
        .max(255, byEach(matrixIdSays))
        .regex(/^@[^:\s]+:\S+$/, byEach(matrixIdSays))
        .refine(isMatrixUserId, byEach(matrixIdSays))
        .describe('The Matrix user ID to contact, like @admin:example.com.')
        .optional(),
      email_address: z
        .string(byEach(emailSays))
        .regex(/^[^@\s]+@[^@\s]+$/, byEach(emailSays))
        .describe('An email address to contact.')
        .optional(),
    },
    by(contactSays),
  )
  .catchall(jsonValue)
  .superRefine(checkContact, whenMap);

const contactsSays: Says = (v) =>
  `expected a list of contacts like - { role: m.role.admin, matrix_id: "@admin:example.com" }; got ${show(v)}`;

const supportSays: Says = (v) =>
  v === NOT_PLAIN
    ? 'a map cannot be written in JSON'
    : `expected a map with contacts and/or support_page, or null to answer 404; got ${show(v)}`;

const support = z
  .object(
    {
      contacts: z.array(contact, by(contactsSays)).describe('Who to contact: each with a role and matrix_id and/or email_address.').optional(),
      support_page: httpUrl(urlSays).describe('A web page with support information.').optional(),
    },
    by(supportSays),
  )
  .catchall(jsonValue)
  .superRefine(checkSupport, whenMap);

/** `well_known.support`: the MSC1929 body. */
export const supportBody = z.preprocess(plainMapOnly, support.transform((v) => v as JsonObject));
