import { Client } from 'pg';
import { testDatabaseUrl } from './services';

/** A fresh client connected to the test database; the caller ends it. */
export async function connected(): Promise<Client> {
  const client = new Client({ connectionString: testDatabaseUrl() });
  await client.connect();
  return client;
}

/** Runs `work` on a fresh client, always closing it. */
export async function withClient<T>(work: (client: Client) => Promise<T>): Promise<T> {
  const client = await connected();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}
