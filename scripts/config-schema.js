#!/usr/bin/env node
'use strict';
// Writes config/matrix-edge.schema.json, the JSON Schema editors use to complete and check the YAML
// config, from the zod schema in src/config (built into dist/ first: `npm run config-schema`).
// --check writes nothing and exits 1 when the committed file is not current (the unit test
// test/unit/config-schema.test.ts checks the same).
const fs = require('node:fs');
const path = require('node:path');
const { CONFIG_SCHEMA_PATH, renderConfigJsonSchema } = require('../dist/config/json-schema.js');

const target = path.join(__dirname, '..', CONFIG_SCHEMA_PATH);
const text = renderConfigJsonSchema();
const current = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : null;

if (current === text) {
  console.log(`config-schema: ${CONFIG_SCHEMA_PATH} is current`);
} else if (process.argv.includes('--check')) {
  console.error(`config-schema: ${CONFIG_SCHEMA_PATH} is out of date; run npm run config-schema`);
  process.exitCode = 1;
} else {
  fs.writeFileSync(target, text);
  console.log(`config-schema: wrote ${CONFIG_SCHEMA_PATH}`);
}
