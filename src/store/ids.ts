// Object ids: 25 random lowercase letters and digits, as Docker Swarm's (about 129 bits), so
// that short unique prefixes are convenient to type.
import { randomBytes } from 'node:crypto';

export const ID_LENGTH = 25;
const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';

export function newId(): string {
  let id = '';
  // Rejection sampling keeps the letters uniform: 252 is the largest multiple of 36 below 256.
  while (id.length < ID_LENGTH) {
    for (const byte of randomBytes(ID_LENGTH * 2)) {
      if (byte < 252) id += ALPHABET[byte % 36];
      if (id.length === ID_LENGTH) break;
    }
  }
  return id;
}
