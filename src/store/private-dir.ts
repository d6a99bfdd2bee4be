/**
 * Directories that hold private keys: created 0700 whatever the umask, and a loose storage root
 * narrowed to 0700. The file storage uses these; so does the composition root for the storage
 * directory, which also holds the (local) control socket.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';

export const DIR_MODE = 0o700;

/** Creates `dir` and its missing parents with mode 0700; fsyncs the parent of the first one created. */
export async function ensurePrivateDirectory(dir: string): Promise<void> {
  const first = await fsp.mkdir(dir, { recursive: true, mode: DIR_MODE });
  if (first === undefined) return;
  // chmod what was created, whatever the umask did to it.
  let p = dir;
  for (;;) {
    await fsp.chmod(p, DIR_MODE);
    if (p === first || path.dirname(p) === p) break;
    p = path.dirname(p);
  }
  await syncDirectory(path.dirname(first));
}

/**
 * Creates the directory `root` (0700) when it is not there, and narrows an existing one that others
 * can read or enter to 0700. Returns the mode it had when it was narrowed, else null.
 */
export async function securePrivateRoot(root: string): Promise<number | null> {
  await ensurePrivateDirectory(root);
  const mode = (await fsp.stat(root)).mode & 0o777;
  if ((mode & 0o077) === 0) return null;
  await fsp.chmod(root, DIR_MODE);
  return mode;
}

export async function syncDirectory(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
